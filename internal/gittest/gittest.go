// Package gittest runs a real git server on loopback for tests: git
// http-backend behind net/http/cgi with HTTP basic auth (so that token-based
// clone and push are exercised), plus helpers to create bare repositories with
// an initial commit and to read back what was pushed.
package gittest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// User is the basic-auth user name the server expects by default; any user
// name is accepted as long as the password is the token.
const User = "x-access-token"

// Server is a loopback git smart-HTTP server.
type Server struct {
	// URL is the server's base URL; repositories live at URL/<name>.git.
	URL string
	// Root is the directory holding the bare repositories.
	Root string
	// Token is the password every request must carry (basic auth).
	Token string
	// CAFile is the PEM of the server's certificate with Options.TLS (set
	// GIT_SSL_CAINFO to it), else "".
	CAFile string

	srv      *httptest.Server
	authFail atomic.Int64
	requests atomic.Int64
	gate     atomic.Pointer[chan struct{}] // non-nil: requests wait for it to close
}

// Options configures Start.
type Options struct {
	// Token is the required password; random when empty.
	Token string
	// Addr is the listen address (default 127.0.0.1:0). Machines in the
	// Fly emulator's network namespaces reach only its internet address.
	Addr string
	// TLS serves https with a certificate of its own for Addr's host, whose
	// PEM is in Server.CAFile (agents only use http with loopback hosts).
	TLS bool
}

// selfSigned makes a certificate for host (an IP address or a name) and
// returns it with its PEM, which clients trust as their CA.
func selfSigned(host string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gittest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Start runs a server until the test ends.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Token == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		o.Token = "gt-" + hex.EncodeToString(b)
	}
	backend, err := httpBackend()
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	s := &Server{Root: t.TempDir(), Token: o.Token}
	h := &cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"HOME=" + s.Root,
		},
		InheritEnv: []string{"PATH"},
		// http-backend's complaints (e.g. an unknown repository) are
		// answered to the client; keep them out of the test output.
		Stderr: io.Discard,
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if g := s.gate.Load(); g != nil {
			select {
			case <-*g:
			case <-r.Context().Done():
				return
			}
		}
		_, pass, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(pass), []byte(s.Token)) != 1 {
			s.authFail.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="gittest"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		// git http-backend reads the protocol version from GIT_PROTOCOL;
		// net/http/cgi passes the header as HTTP_GIT_PROTOCOL, which
		// http-backend also honours.
		h.ServeHTTP(w, r)
	}))
	if o.Addr != "" {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			t.Fatalf("gittest: listen on %s: %v", o.Addr, err)
		}
		s.srv.Listener.Close()
		s.srv.Listener = ln
	}
	if o.TLS {
		host, _, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
		cert, pemBytes, err := selfSigned(host)
		if err != nil {
			t.Fatalf("gittest: %v", err)
		}
		s.CAFile = filepath.Join(t.TempDir(), "gittest-ca.pem")
		if err := os.WriteFile(s.CAFile, pemBytes, 0o644); err != nil {
			t.Fatalf("gittest: %v", err)
		}
		s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

func httpBackend() (string, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("git --exec-path: %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("git-http-backend: %w", err)
	}
	return p, nil
}

// Hold makes every request wait until release is called (to test what
// happens while a clone or push is slow). release may be called more than once.
func (s *Server) Hold() (release func()) {
	ch := make(chan struct{})
	s.gate.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.gate.CompareAndSwap(&ch, nil)
			close(ch)
		})
	}
}

// AuthFailures counts requests refused for missing or wrong credentials.
func (s *Server) AuthFailures() int64 { return s.authFail.Load() }

// Requests counts all requests.
func (s *Server) Requests() int64 { return s.requests.Load() }

// RepoURL returns the https-like (http on loopback) URL of a repository, without credentials.
func (s *Server) RepoURL(name string) string { return s.URL + "/" + name + ".git" }

// RepoPath returns the bare repository's directory.
func (s *Server) RepoPath(name string) string { return filepath.Join(s.Root, name+".git") }

// FileURL returns the file:// URL of a repository (no auth involved).
func (s *Server) FileURL(name string) string { return "file://" + s.RepoPath(name) }

// Git runs git with an isolated configuration in dir and returns its stdout.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := RunGit(dir, nil, args...)
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	return out
}

// RunGit runs git with an isolated configuration (no global or system
// config) in dir with extra env; it returns stdout, or an error holding stderr.
func RunGit(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=gittest", "GIT_AUTHOR_EMAIL=gittest@example.invalid",
		"GIT_COMMITTER_NAME=gittest", "GIT_COMMITTER_EMAIL=gittest@example.invalid")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// CreateRepo makes a bare repository name.git whose branch "main" holds one
// commit with files (path -> content; default a README.md). It accepts
// pushes over HTTP. It returns the repository's URL.
func (s *Server) CreateRepo(t testing.TB, name string, files map[string]string) string {
	t.Helper()
	bare := s.RepoPath(name)
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		t.Fatal(err)
	}
	Git(t, "", "init", "--quiet", "--bare", "--initial-branch=main", bare)
	Git(t, bare, "config", "http.receivepack", "true")
	if files == nil {
		files = map[string]string{"README.md": "# " + name + "\n"}
	}
	work := t.TempDir()
	Git(t, work, "init", "--quiet", "--initial-branch=main")
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		full := filepath.Join(work, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(files[p]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	Git(t, work, "add", "-A")
	Git(t, work, "commit", "--quiet", "-m", "initial commit")
	Git(t, work, "push", "--quiet", bare, "main")
	return s.RepoURL(name)
}

// AddBranch creates branch from main in repo name with one more commit
// holding files.
func (s *Server) AddBranch(t testing.TB, name, branch string, files map[string]string) string {
	t.Helper()
	work := t.TempDir()
	Git(t, work, "clone", "--quiet", s.RepoPath(name), ".")
	Git(t, work, "checkout", "--quiet", "-b", branch)
	for p, c := range files {
		full := filepath.Join(work, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	Git(t, work, "add", "-A")
	Git(t, work, "commit", "--quiet", "--allow-empty", "-m", "branch "+branch)
	Git(t, work, "push", "--quiet", "origin", branch)
	return strings.TrimSpace(Git(t, work, "rev-parse", "HEAD"))
}

// RejectPushes installs (reject true) or removes a pre-receive hook in repo
// name that refuses every push with message.
func (s *Server) RejectPushes(t testing.TB, name string, reject bool, message string) {
	t.Helper()
	hook := filepath.Join(s.RepoPath(name), "hooks", "pre-receive")
	if !reject {
		if err := os.Remove(hook); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return
	}
	script := fmt.Sprintf("#!/bin/sh\necho %q >&2\nexit 1\n", message)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Commit returns the commit id a ref points to in repo name ("" if the ref
// does not exist). ref may be a branch name or a full ref.
func (s *Server) Commit(t testing.TB, name, ref string) string {
	t.Helper()
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	out, err := RunGit(s.RepoPath(name), nil, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// ReadFile returns a file's content at ref in repo name and whether it exists.
func (s *Server) ReadFile(t testing.TB, name, ref, path string) (string, bool) {
	t.Helper()
	if !strings.HasPrefix(ref, "refs/") && len(ref) != 40 {
		ref = "refs/heads/" + ref
	}
	out, err := RunGit(s.RepoPath(name), nil, "show", ref+":"+path)
	if err != nil {
		return "", false
	}
	return out, true
}

// CommitInfo returns "author name <email>\nsubject" of a commit in repo name.
func (s *Server) CommitInfo(t testing.TB, name, commit string) string {
	t.Helper()
	return strings.TrimSpace(Git(t, s.RepoPath(name), "log", "-1", "--format=%an <%ae>%n%s", commit))
}

// Refs lists every ref of repo name with its commit.
func (s *Server) Refs(t testing.TB, name string) map[string]string {
	t.Helper()
	out := Git(t, s.RepoPath(name), "for-each-ref", "--format=%(refname) %(objectname)")
	refs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if ref, id, ok := strings.Cut(line, " "); ok {
			refs[ref] = id
		}
	}
	return refs
}
