package agent

import (
	"io"
	"strings"
	"sync"
)

// scrubber replaces known secrets with a marker. The agent registers each
// session's credentials with it before using them, and routes its log
// output, git's stderr and the command's stderr through it.
type scrubber struct {
	mu      sync.RWMutex
	secrets []string
}

const redacted = "[REDACTED]"

func (s *scrubber) add(secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range secrets {
		if len(v) >= 4 {
			s.secrets = append(s.secrets, v)
		}
	}
}

func (s *scrubber) scrub(in string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.secrets {
		if strings.Contains(in, v) {
			in = strings.ReplaceAll(in, v, redacted)
		}
	}
	return in
}

// writer returns an io.Writer that scrubs each write (hclog writes whole lines).
func (s *scrubber) writer(w io.Writer) io.Writer { return &scrubWriter{s: s, w: w} }

type scrubWriter struct {
	s *scrubber
	w io.Writer
}

func (sw *scrubWriter) Write(p []byte) (int, error) {
	out := sw.s.scrub(string(p))
	if _, err := io.WriteString(sw.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}
