// Package ctxio makes readers honour a context: a long copy stops soon
// after its context ends instead of running to the end of its input.
package ctxio

import (
	"context"
	"io"
)

// Reader returns r, failing with ctx's error once ctx is done (checked
// before each read).
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
