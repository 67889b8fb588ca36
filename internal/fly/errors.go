package fly

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Sentinel errors, matched with errors.Is against a *Error (and, for
// ErrTimeout, against WaitMachine's own deadline).
var (
	// ErrNotFound: 404, the app, machine, lease or key does not exist.
	ErrNotFound = errors.New("fly: not found")
	// ErrConflict: 409, typically a lease held by someone else, or a
	// mutation without the nonce of the lease that is held.
	ErrConflict = errors.New("fly: conflict")
	// ErrRateLimited: 429 after the client's retries were exhausted.
	ErrRateLimited = errors.New("fly: rate limited")
	// ErrTimeout: 408 from the server, or WaitMachine's deadline passing.
	ErrTimeout = errors.New("fly: timeout")
	// ErrInsufficientCapacity: the region has no room for the machine
	// (error status "insufficient_capacity"); try another region.
	ErrInsufficientCapacity = errors.New("fly: insufficient capacity")
	// ErrUnauthorized: 401, missing or invalid token.
	ErrUnauthorized = errors.New("fly: unauthorized")
	// ErrForbidden: 403, the token may not act on this resource (for an
	// app name: the app exists in another organization).
	ErrForbidden = errors.New("fly: forbidden")
	// ErrNameTaken: an app name that is already in use.
	ErrNameTaken = errors.New("fly: name taken")
	// ErrPreconditionFailed: 412, e.g. a stale machine_version on a metadata batch update.
	ErrPreconditionFailed = errors.New("fly: precondition failed")
)

// Error is an error response from the Machines API.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the body's "message" or "error" text (or the raw body when
	// it is not Fly's JSON error).
	Message string
	// Code is the body's "status" field: "unknown", "insufficient_capacity",
	// "name_taken", or "".
	Code string
	// RequestID is the fly-request-id response header, for Fly support.
	RequestID string
	// Method and Path name the request (path relative to the base URL).
	Method string
	Path   string
	// RetryAfter is the parsed Retry-After header, zero when absent.
	RetryAfter time.Duration
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fly api %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Code != "" && e.Code != StatusUnknown {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " [fly-request-id %s]", e.RequestID)
	}
	return b.String()
}

// Is matches the package's sentinel errors by status code and error code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrTimeout:
		return e.StatusCode == http.StatusRequestTimeout
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrPreconditionFailed:
		return e.StatusCode == http.StatusPreconditionFailed
	case ErrInsufficientCapacity:
		return e.Code == StatusInsufficientCapacity
	case ErrNameTaken:
		// fly-go prefers the code and falls back to the legacy message text.
		return e.Code == StatusNameTaken ||
			(e.StatusCode >= 400 && e.StatusCode < 500 && strings.Contains(strings.ToLower(e.Message), "already been taken"))
	}
	return false
}

// StatusCode returns the HTTP status of err if it is (or wraps) a *Error, else 0.
func StatusCode(err error) int {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.StatusCode
	}
	return 0
}

// IsTransient reports whether err is worth retrying later at a higher
// level (the client has already retried what it safely could): rate
// limiting, a server-side timeout, a 5xx, or a network error. Context
// cancellation and deadlines are not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe.StatusCode == http.StatusTooManyRequests || fe.StatusCode == http.StatusRequestTimeout || fe.StatusCode >= 500
	}
	var ne net.Error
	return errors.As(err, &ne)
}
