package blob

import (
	"errors"
	"net/http"
)

// Errors cross the HTTP API as a status and a short code in a JSON body
// {"error": message, "code": code}; Code and FromCode convert both ways so
// that errors.Is works on either side of the wire.
var codes = []struct {
	err    error
	code   string
	status int
}{
	{ErrNotFound, "not_found", http.StatusNotFound},
	{ErrInvalidID, "invalid_id", http.StatusBadRequest},
	{ErrCorrupt, "corrupt", http.StatusConflict},
	{ErrTooLarge, "too_large", http.StatusRequestEntityTooLarge},
	{ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{ErrNoSpace, "no_space", http.StatusInsufficientStorage},
}

// Code returns the wire code and HTTP status for err.
func Code(err error) (code string, status int) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return "internal", http.StatusInternalServerError
}

// Error is an error received over the wire.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	Status  int    `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Unwrap maps the wire code back to its sentinel.
func (e *Error) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}
