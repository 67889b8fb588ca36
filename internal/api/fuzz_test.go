package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzCreateSessionRequest: whatever body decodes survives the client's
// encoding unchanged (credentials included), and the redacting json.Marshal
// never shows a credential.
func FuzzCreateSessionRequest(f *testing.F) {
	for _, s := range []string{
		`{"pool":"default"}`,
		`{"pool":"p","repo":"https://github.com/a/b.git","branch":"main","session_branch":"hangar/x","mode":"jsonl",` +
			`"command":["claude","-p"],"env":{"A":"1"},"cols":120,"rows":40,"git_author":{"name":"Ada","email":"a@b"},` +
			`"credentials":{"anthropic_api_key":"sk-ant-secret-value","git_token":"ghp_secretvalue1"}}`,
		`{"pool":1}`, `{"credentials":{"claude_oauth_token":"oauth-secret-token"}}`, `null`, `[]`, `{"env":{"":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r CreateSessionRequest
		if json.Unmarshal(data, &r) != nil {
			return
		}
		b, err := EncodeCreateSessionRequest(&r)
		if err != nil {
			t.Fatalf("encode %+v: %v", r, err)
		}
		var r2 CreateSessionRequest
		if err := json.Unmarshal(b, &r2); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		norm := func(x *CreateSessionRequest) {
			if x.Credentials != nil && x.Credentials.Empty() {
				x.Credentials = nil
			}
			if len(x.Command) == 0 {
				x.Command = nil
			}
			if len(x.Env) == 0 {
				x.Env = nil
			}
		}
		norm(&r)
		norm(&r2)
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, r2)
		}
		red, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if c := r.Credentials; c != nil {
			for _, v := range []string{c.AnthropicAPIKey, c.ClaudeOAuthToken, c.GitToken} {
				if len(v) >= 12 && strings.Contains(string(red), string(mustJSON(v))) {
					t.Fatalf("json.Marshal shows a credential: %s", red)
				}
			}
		}
	})
}

func mustJSON(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
