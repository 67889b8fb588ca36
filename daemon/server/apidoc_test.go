package server

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestAPIDocMatchesOpenAPI keeps docs/api.md and the OpenAPI document served
// at /v1/openapi.json describing the same endpoints: every path and method
// of the document has a heading or list item in docs/api.md ("### `GET
// /v1/pools` …" or "- `GET /healthz` …"), and every such entry is in the
// document.
func TestAPIDocMatchesOpenAPI(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	inSpec := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				inSpec[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	b, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	// The endpoint an entry describes; a query ("?state=…") or optional
	// part ("[?…]") after the path is not part of it.
	entry := regexp.MustCompile("^(?:#+ |- )`(GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS) (/[^`\\s\\[?]*)")
	inDoc := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := entry.FindStringSubmatch(line); m != nil {
			inDoc[m[1]+" "+m[2]] = true
		}
	}
	var missing, extra []string
	for ep := range inSpec {
		if !inDoc[ep] {
			missing = append(missing, ep)
		}
	}
	for ep := range inDoc {
		if !inSpec[ep] {
			extra = append(extra, ep)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("in openapi.json but not described in docs/api.md: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("described in docs/api.md but not in openapi.json: %v", extra)
	}
}
