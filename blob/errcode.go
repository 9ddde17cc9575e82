package blob

import (
	"encoding/json"
	"errors"
	"io"
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
	{ErrBadDigest, "bad_digest", http.StatusBadRequest},
	{ErrMissingChunks, "missing_chunks", http.StatusConflict},
	{ErrExists, "exists", http.StatusConflict},
	{ErrNotEmpty, "not_empty", http.StatusConflict},
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

// WriteError answers err as JSON, {"error": message, "code": code}, with
// its status. An error received from another node keeps its code and status.
func WriteError(w http.ResponseWriter, err error) {
	code, status := Code(err)
	var wire *Error
	if errors.As(err, &wire) && wire.Status != 0 {
		code, status = wire.Code, wire.Status
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Error{Code: code, Message: err.Error()})
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

// ReadError decodes the error a server sent in resp (a non-2xx response).
// A response without an error body (HEAD, a proxy's page) gets the code of
// its status, so errors.Is still works. It reads at most 64 KiB of the body
// and leaves closing it to the caller.
func ReadError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(e); err != nil || e.Message == "" {
		e.Message = "HTTP " + resp.Status
	}
	if e.Code == "" {
		e.Code = "internal"
		for _, c := range codes {
			if c.status == resp.StatusCode {
				e.Code = c.code
				break
			}
		}
	}
	return e
}
