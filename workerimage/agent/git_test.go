package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangarhq/hangar/internal/agentapi"
	"github.com/hangarhq/hangar/internal/gittest"
	"github.com/hangarhq/hangar/internal/wire"
)

// TestPushFailureReported: a refused push is reported with git's reason,
// never swallowed, and the agent still exits afterwards.
func TestPushFailureReported(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "team/svc", nil)
	a := startAgent(t, agentOpts{})
	a.init(&agentapi.InitRequest{SessionID: "pf", Repo: repoURL, Command: []string{a.fake},
		Credentials: &agentapi.Credentials{GitToken: git.Token}})
	c := a.attach("pf", wire.SubprotocolPTY, wire.Attach{From: 0})
	c.input("/write change.txt something\r")
	c.waitOutput("wrote change.txt")
	git.RejectPushes(t, "team/svc", true, "protected: pushes are disabled")
	res := a.finish("pf", &agentapi.FinishRequest{Message: "try"})
	if res.OK || !strings.Contains(res.Message, "push failed") || !strings.Contains(res.Message, "protected: pushes are disabled") || res.Commit == "" {
		t.Fatalf("finish %+v", res)
	}
	if git.Commit(t, "team/svc", "hangar/pf") != "" {
		t.Fatal("the branch exists on the server")
	}
	a.waitExit()
	scanForSecrets(t, a, []string{git.Token})
}

// TestCloneFailures: a wrong token or a missing repository fails init with
// a clear error (no token in it); the agent keeps serving and a retry with
// good credentials for the same session works.
func TestCloneFailures(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "team/x", nil)
	a := startAgent(t, agentOpts{})
	bad := &agentapi.InitRequest{SessionID: "cf", Repo: repoURL, Command: []string{a.fake},
		Credentials: &agentapi.Credentials{GitToken: "wrong-token-1234567"}}
	_, err := a.client.Init(context.Background(), bad)
	var ae *agentapi.Error
	if !errors.As(err, &ae) || ae.StatusCode != 502 || ae.Code != agentapi.CodeInitFailed || !strings.Contains(ae.Message, "clone") {
		t.Fatalf("init with a wrong token: %v", err)
	}
	a.record(ae.Message)
	if code, body := a.call("GET", "/v1/health", "s1", nil); code != 200 || !strings.Contains(body, `"state":"failed"`) {
		t.Fatalf("health %d %s", code, body)
	}
	if st := a.status("cf"); st.State != agentapi.StateFailed || st.Error == "" {
		t.Fatalf("status %+v", st)
	}
	if entries, _ := os.ReadDir(a.workspace); len(entries) != 0 {
		t.Fatalf("failed clone left %d entries", len(entries))
	}
	good := *bad
	good.Credentials = &agentapi.Credentials{GitToken: git.Token}
	if st := a.init(&good); st.State != agentapi.StateRunning {
		t.Fatalf("retry %+v", st)
	}
	scanForSecrets(t, a, []string{"wrong-token-1234567", git.Token})

	b := startAgent(t, agentOpts{})
	_, err = b.client.Init(context.Background(), &agentapi.InitRequest{SessionID: "cf2", Repo: git.RepoURL("team/missing"),
		Credentials: &agentapi.Credentials{GitToken: git.Token}})
	if !errors.As(err, &ae) || ae.Code != agentapi.CodeInitFailed {
		t.Fatalf("init of a missing repo: %v", err)
	}
}

// TestBranchesAndCheckpoints: start from a named base branch, resume an
// existing session branch, push checkpoints to a separate ref while the
// session branch stays clean, and default the session branch.
func TestBranchesAndCheckpoints(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "team/app", nil)
	devHead := git.AddBranch(t, "team/app", "dev", map[string]string{"dev.txt": "dev\n"})
	resumed := git.AddBranch(t, "team/app", "feature/resume", map[string]string{"wip.txt": "earlier work\n"})
	a := startAgent(t, agentOpts{})
	a.init(&agentapi.InitRequest{SessionID: "br", Repo: repoURL, Branch: "dev", SessionBranch: "feature/resume",
		Command: []string{a.fake}, CheckpointInterval: agentapi.Duration(time.Second),
		Credentials: &agentapi.Credentials{GitToken: git.Token}})
	if h := strings.TrimSpace(gittest.Git(t, a.workspace, "rev-parse", "HEAD")); h != resumed {
		t.Fatalf("resumed session branch at %s, want %s", h, resumed)
	}
	if _, err := os.Stat(filepath.Join(a.workspace, "wip.txt")); err != nil {
		t.Fatal("resumed work missing")
	}
	c := a.attach("br", wire.SubprotocolPTY, wire.Attach{From: 0})
	c.input("/write progress.txt half done\r")
	c.waitOutput("wrote progress.txt")
	ref := "refs/hangar/checkpoints/br"
	eventually(t, "checkpoint pushed", func() bool {
		content, ok := git.ReadFile(t, "team/app", ref, "progress.txt")
		return ok && content == "half done\n"
	})
	if git.Commit(t, "team/app", "feature/resume") != resumed {
		t.Fatal("a checkpoint moved the session branch")
	}
	eventually(t, "checkpoint status", func() bool {
		st := a.status("br")
		return st.Checkpoint != nil && st.Checkpoint.OK && st.Checkpoint.Ref == ref
	})
	if s := strings.TrimSpace(gittest.Git(t, a.workspace, "status", "--porcelain")); !strings.Contains(s, "?? progress.txt") {
		t.Fatalf("a checkpoint touched the index: %q", s)
	}
	res := a.finish("br", nil)
	if !res.OK || res.Ref != "refs/heads/feature/resume" {
		t.Fatalf("finish %+v", res)
	}
	if c, ok := git.ReadFile(t, "team/app", "feature/resume", "progress.txt"); !ok || c != "half done\n" {
		t.Fatal("final commit lacks the work")
	}
	if git.CommitInfo(t, "team/app", res.Commit) != "hangar <hangar@localhost>\nhangar session br" {
		t.Fatalf("default author and message: %q", git.CommitInfo(t, "team/app", res.Commit))
	}
	a.waitExit()

	// A new session from a base branch gets hangar/<id>; finish without
	// changes still pushes the branch.
	b := startAgent(t, agentOpts{})
	b.init(&agentapi.InitRequest{SessionID: "nb", Repo: repoURL, Branch: "dev", Command: []string{b.fake},
		Credentials: &agentapi.Credentials{GitToken: git.Token}})
	res = b.finish("nb", nil)
	if !res.OK || res.Commit != devHead || git.Commit(t, "team/app", "hangar/nb") != devHead || !strings.Contains(res.Message, "no changes") {
		t.Fatalf("finish without changes %+v", res)
	}
}

// TestNoRepository: without a repo the workspace is an empty git
// repository; finish succeeds and says that nothing was pushed (nothing
// failed: there is nowhere to push to).
func TestNoRepository(t *testing.T) {
	a := startAgent(t, agentOpts{})
	a.init(&agentapi.InitRequest{SessionID: "nr", Command: []string{a.fake}})
	c := a.attach("nr", wire.SubprotocolPTY, wire.Attach{From: 0})
	c.input("/write a.txt x\r")
	c.waitOutput("wrote a.txt")
	res := a.finish("nr", &agentapi.FinishRequest{Message: "local"})
	if want := (agentapi.FinishResponse{OK: true, Message: agentapi.NoRepositoryMessage}); *res != want {
		t.Fatalf("finish %+v", res)
	}
	if code := a.waitExit(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestExitGraceFinishes: a session whose command exited and that nobody
// finishes is finished by the agent itself (work pushed), which then exits.
func TestExitGraceFinishes(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "team/g", nil)
	a := startAgent(t, agentOpts{env: map[string]string{"HANGAR_AGENT_EXIT_GRACE": "1s"}})
	a.init(&agentapi.InitRequest{SessionID: "gr", Repo: repoURL, Command: []string{a.fake},
		Credentials: &agentapi.Credentials{GitToken: git.Token}})
	c := a.attach("gr", wire.SubprotocolPTY, wire.Attach{From: 0})
	c.input("/write left.txt behind\r")
	c.waitOutput("wrote left.txt")
	c.input("/exit\r")
	c.waitClosed()
	if code := a.waitExit(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if content, ok := git.ReadFile(t, "team/g", "hangar/gr", "left.txt"); !ok || content != "behind\n" {
		t.Fatal("work not pushed by the grace finish")
	}
}

// TestStopSignalCheckpoints: Fly stops a machine with SIGINT; the agent
// pushes a checkpoint of the work in progress, stops the command and exits.
func TestStopSignalCheckpoints(t *testing.T) {
	git := gittest.Start(t)
	repoURL := git.CreateRepo(t, "team/s", nil)
	a := startAgent(t, agentOpts{})
	a.init(&agentapi.InitRequest{SessionID: "sig", Repo: repoURL, Command: []string{a.fake},
		Credentials: &agentapi.Credentials{GitToken: git.Token}})
	c := a.attach("sig", wire.SubprotocolPTY, wire.Attach{From: 0})
	c.input("/write wip.txt unsaved\r")
	c.waitOutput("wrote wip.txt")
	if err := a.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := a.waitExit(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if content, ok := git.ReadFile(t, "team/s", "refs/hangar/checkpoints/sig", "wip.txt"); !ok || content != "unsaved\n" {
		t.Fatal("no checkpoint on stop")
	}
}
