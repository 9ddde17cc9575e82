//go:build !linux

package disk

import (
	"errors"
	"os"
)

const journalOn = false

var errNoJournal = errors.New("disk: no journal on this system")

func fdatasync(f *os.File) error { return errNoJournal }
func syncFS(dir string) error    { return errNoJournal }
