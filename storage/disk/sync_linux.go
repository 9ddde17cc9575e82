package disk

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync syncs f's data and what is needed to read it back (its size),
// not its times: enough for an append.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
