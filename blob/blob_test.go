package blob

import (
	"errors"
	"io/fs"
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
