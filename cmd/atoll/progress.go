package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows bytes, rate and ETA on stderr when it is a terminal; it is
// silent otherwise (scripts, CI) or with --quiet. Its zero value is silent.
type progress struct{ bar *progressbar.ProgressBar }

// newProgress starts a bar for total bytes (-1 if unknown).
func newProgress(total int64, desc string, quiet bool) *progress {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionOnCompletion(func() { os.Stderr.WriteString("\n") }),
	)}
}

func (p *progress) Write(b []byte) (int, error) {
	if p.bar != nil {
		p.bar.Add64(int64(len(b)))
	}
	return len(b), nil
}

// set moves the bar to n bytes (after a rewind, or for a resumed download).
func (p *progress) set(n int64) {
	if p.bar != nil {
		p.bar.Set64(n)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

// countingFile reports reads of an upload to a progress bar while staying
// seekable, so the client can measure it and rewind it for a retry.
type countingFile struct {
	*os.File
	p *progress
}

func (f countingFile) Read(b []byte) (int, error) {
	n, err := f.File.Read(b)
	f.p.Write(b[:n])
	return n, err
}

func (f countingFile) Seek(off int64, whence int) (int64, error) {
	pos, err := f.File.Seek(off, whence)
	if err == nil && whence == io.SeekStart {
		f.p.set(pos)
	}
	return pos, err
}
