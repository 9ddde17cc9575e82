package blob

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
)

// Errors cross the HTTP API as a status and a short code in a JSON body
// {"error": message, "code": code}. Every sentinel that can cross has a
// code: blob's own are listed here, other packages declare theirs with
// NewError. Code and Error.Unwrap convert both ways, so errors.Is works on
// either side of the wire.
type coded struct {
	err    error
	code   string
	status int
}

var (
	codesMu sync.RWMutex
	// codes is ordered most specific first: a sentinel made by NewError
	// comes before the parent it wraps.
	codes = []coded{
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
		{ErrForbidden, "forbidden", http.StatusForbidden},
		{ErrBadRequest, "bad_request", http.StatusBadRequest},
	}
)

// sentinel is an error made by NewError.
type sentinel struct {
	msg    string
	parent error
}

func (s *sentinel) Error() string {
	if s.parent == nil {
		return s.msg
	}
	return s.msg + ": " + s.parent.Error()
}

func (s *sentinel) Unwrap() error { return s.parent }

// NewError returns a new sentinel error with its own wire code, for a
// package-level var: it keeps its identity across HTTP in any program that
// links the package declaring it, and elsewhere still matches its parent
// (which it wraps; nil for none). A status of 0 takes the parent's.
// Codes are part of the API: never reuse or change one.
func NewError(code string, status int, msg string, parent error) error {
	codesMu.Lock()
	defer codesMu.Unlock()
	for _, c := range codes {
		if c.code == code {
			panic("blob: wire code " + code + " declared twice")
		}
	}
	if status == 0 {
		status = statusOf(parent)
	}
	if status == 0 {
		panic("blob: wire code " + code + " has no status")
	}
	err := &sentinel{msg: msg, parent: parent}
	codes = slices.Insert(codes, 0, coded{err, code, status})
	return err
}

func statusOf(err error) int {
	for _, c := range codes {
		if c.err == err {
			return c.status
		}
	}
	return 0
}

// Codes returns every error with a wire code, most specific first.
func Codes() []error {
	codesMu.RLock()
	defer codesMu.RUnlock()
	out := make([]error, len(codes))
	for i, c := range codes {
		out[i] = c.err
	}
	return out
}

// Code returns the wire code and HTTP status for err.
func Code(err error) (code string, status int) {
	codesMu.RLock()
	defer codesMu.RUnlock()
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

// Unwrap maps the wire code back to its sentinel. A code this program does
// not know (declared in a package it does not link) falls back to the
// sentinel of its status, so the broad meaning survives.
func (e *Error) Unwrap() error {
	codesMu.RLock()
	defer codesMu.RUnlock()
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return byStatus(e.Status).err
}

// byStatus returns blob's own (broad) sentinel for an HTTP status, or a
// zero coded with the "internal" code. The caller holds codesMu.
func byStatus(status int) coded {
	for _, c := range codes {
		if _, specific := c.err.(*sentinel); !specific && c.status == status {
			return c
		}
	}
	return coded{code: "internal"}
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
		codesMu.RLock()
		e.Code = byStatus(resp.StatusCode).code
		codesMu.RUnlock()
	}
	return e
}
