package blob

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

// BenchmarkHash compares the content hash (BLAKE3) with SHA-256.
func BenchmarkHash(b *testing.B) {
	for _, size := range []int{64 << 10, 4 << 20} {
		data := make([]byte, size)
		b.Run(fmt.Sprintf("blake3/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				Sum(data)
			}
		})
		b.Run(fmt.Sprintf("sha256/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				sha256.Sum256(data)
			}
		})
	}
}
