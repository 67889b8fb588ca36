package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// seedClaudeConfig writes $CLAUDE_CONFIG_DIR/.claude.json so that a fresh VM
// starts straight at Claude Code's prompt (NOTES.md §2.3, §7): onboarding
// done, the workspace trusted, and the session's API key approved. Claude
// Code stores the approval as the key's last 20 characters; that suffix is
// all that is written (and only for keys longer than 20 characters, so the
// whole key never lands on disk). Existing keys in the file are kept.
func seedClaudeConfig(dir, workspace, apiKey string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create claude config dir: %w", err)
	}
	path := filepath.Join(dir, ".claude.json")
	cfg := map[string]any{}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &cfg); err != nil {
			cfg = map[string]any{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	cfg["hasCompletedOnboarding"] = true
	projects, _ := cfg["projects"].(map[string]any)
	if projects == nil {
		projects = map[string]any{}
	}
	proj, _ := projects[workspace].(map[string]any)
	if proj == nil {
		proj = map[string]any{}
	}
	proj["hasTrustDialogAccepted"] = true
	proj["hasCompletedProjectOnboarding"] = true
	projects[workspace] = proj
	cfg["projects"] = projects
	if len(apiKey) > 20 {
		resp, _ := cfg["customApiKeyResponses"].(map[string]any)
		if resp == nil {
			resp = map[string]any{}
		}
		suffix := apiKey[len(apiKey)-20:]
		approved, _ := resp["approved"].([]any)
		found := false
		for _, a := range approved {
			if a == suffix {
				found = true
			}
		}
		if !found {
			approved = append(approved, suffix)
		}
		resp["approved"] = approved
		if _, ok := resp["rejected"]; !ok {
			resp["rejected"] = []any{}
		}
		cfg["customApiKeyResponses"] = resp
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, path)
}
