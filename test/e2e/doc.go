// Package e2e holds end-to-end tests against a real `hangard dev`: the Go
// attach client (used by the hangar CLI), whose TCP connection is cut again
// and again under streaming output and typing (no output byte lost or
// doubled, no keystroke applied twice), and the hangar binary itself
// (--output json keeps the API's objects whole, tenants by name, attaching
// to an ended session).
package e2e
