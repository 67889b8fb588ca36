// Package e2e holds end-to-end tests of the Go attach client (used by the
// hangar CLI) against a real `hangard dev`: the TCP connection is cut again
// and again under streaming output and typing, and the test checks that no
// output byte is lost or doubled and no keystroke is applied twice.
package e2e
