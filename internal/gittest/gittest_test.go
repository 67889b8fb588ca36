package gittest

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCloneAndPushWithToken(t *testing.T) {
	s := Start(t)
	repoURL := s.CreateRepo(t, "team/app", map[string]string{"a.txt": "hello\n"})
	if s.Commit(t, "team/app", "main") == "" {
		t.Fatal("no main commit")
	}
	u, _ := url.Parse(repoURL)
	u.User = url.UserPassword(User, s.Token)
	work := t.TempDir()
	if _, err := RunGit(work, nil, "clone", "--quiet", repoURL, "nocreds"); err == nil {
		t.Fatal("clone without credentials succeeded")
	}
	if s.AuthFailures() == 0 {
		t.Error("no auth failure counted")
	}
	Git(t, work, "clone", "--quiet", u.String(), "c")
	dir := filepath.Join(work, "c")
	if err := os.WriteFile(filepath.Join(dir, "b.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	Git(t, dir, "checkout", "--quiet", "-b", "feature")
	Git(t, dir, "add", "-A")
	Git(t, dir, "commit", "--quiet", "-m", "add b")
	Git(t, dir, "push", "--quiet", "origin", "feature")
	head := strings.TrimSpace(Git(t, dir, "rev-parse", "HEAD"))
	if got := s.Commit(t, "team/app", "feature"); got != head {
		t.Fatalf("pushed %s, server has %s", head, got)
	}
	if c, ok := s.ReadFile(t, "team/app", "feature", "b.txt"); !ok || c != "new\n" {
		t.Fatalf("read back %q %v", c, ok)
	}
	if _, ok := s.ReadFile(t, "team/app", "main", "b.txt"); ok {
		t.Fatal("b.txt on main")
	}
	if !strings.Contains(s.CommitInfo(t, "team/app", head), "add b") {
		t.Error("commit info")
	}
	s.RejectPushes(t, "team/app", true, "no pushes today")
	Git(t, dir, "commit", "--quiet", "--allow-empty", "-m", "again")
	if _, err := RunGit(dir, nil, "push", "origin", "feature"); err == nil || !strings.Contains(err.Error(), "no pushes today") {
		t.Fatalf("rejected push: %v", err)
	}
	if _, ok := s.Refs(t, "team/app")["refs/heads/feature"]; !ok {
		t.Error("refs")
	}
	s.RejectPushes(t, "team/app", false, "")
	if c := s.AddBranch(t, "team/app", "dev", map[string]string{"d.txt": "d"}); s.Commit(t, "team/app", "dev") != c {
		t.Error("AddBranch")
	}
}
