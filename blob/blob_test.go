package blob

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
)

func TestIDRoundTrip(t *testing.T) {
	id := Sum([]byte("hello"))
	s := id.String()
	if len(s) != IDLen || strings.ToLower(s) != s {
		t.Fatalf("printed form %q", s)
	}
	back, err := ParseID(s)
	if err != nil || back != id {
		t.Fatalf("ParseID(%q) = %v, %v", s, back, err)
	}
}

func TestParseIDRejects(t *testing.T) {
	good := Sum([]byte("x")).String()
	for _, s := range []string{"", "abc", good + "a", strings.ToUpper(good), strings.Repeat("7", IDLen), strings.Repeat("1", IDLen), good[:IDLen-1] + "b"} {
		if _, err := ParseID(s); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseID(%q) = %v, want ErrInvalidID", s, err)
		}
	}
}

func TestReadErrorWithoutBody(t *testing.T) {
	for status, want := range map[int]error{404: ErrNotFound, 409: ErrCorrupt, 503: ErrUnavailable} {
		resp := &http.Response{StatusCode: status, Status: http.StatusText(status), Body: io.NopCloser(strings.NewReader(""))}
		if err := ReadError(resp); !errors.Is(err, want) {
			t.Errorf("status %d without a body: %v, want %v", status, err, want)
		}
	}
}

func TestErrorCodesRoundTrip(t *testing.T) {
	if !errors.Is(ErrNotFound, fs.ErrNotExist) {
		t.Fatal("ErrNotFound must match fs.ErrNotExist")
	}
	for _, err := range []error{ErrNotFound, ErrInvalidID, ErrCorrupt, ErrTooLarge, ErrUnavailable, ErrNoSpace} {
		code, status := Code(err)
		wire := &Error{Code: code, Status: status, Message: "x"}
		if !errors.Is(wire, err) {
			t.Errorf("%v -> %s/%d does not map back", err, code, status)
		}
	}
}
