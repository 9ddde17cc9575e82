package disk

import (
	"os"

	"golang.org/x/sys/unix"
)

// journalOn: the journal needs syncfs, which only Linux has; elsewhere
// every shard is written and fsync'd on its own.
const journalOn = true

func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// syncFS flushes the whole file system holding dir: one call for all the
// shard files written since the last checkpoint.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
