package main

import (
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

func (p *progress) describe(s string) {
	if p.bar != nil {
		p.bar.Describe(s)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}
