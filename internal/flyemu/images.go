package flyemu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsimple"
)

// image returns the mapping for ref: an exact match first, then the ref
// without its tag or digest.
func (e *Emulator) image(ref string) (Image, bool) {
	if img, ok := e.cfg.Images[ref]; ok {
		return img, true
	}
	repo := ref
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i >= 0 && !strings.Contains(repo[i:], "/") {
		repo = repo[:i]
	}
	img, ok := e.cfg.Images[repo]
	return img, ok
}

// imagesFile is the HCL form of an images file:
//
//	image "registry.example/worker:latest" {
//	  entrypoint = ["/usr/local/bin/hangar-agent"]
//	  cmd        = []
//	  env        = { HANGAR_WORKSPACE = "workspace" }
//	}
type imagesFile struct {
	Images []struct {
		Ref        string            `hcl:"ref,label"`
		Entrypoint []string          `hcl:"entrypoint,optional"`
		Cmd        []string          `hcl:"cmd,optional"`
		Env        map[string]string `hcl:"env,optional"`
	} `hcl:"image,block"`
}

// LoadImages reads an image map from a file: JSON
// ({"images": {"ref": {"entrypoint": [...], "cmd": [...], "env": {...}}}}, or
// the inner object alone) when the name ends in .json, HCL (blocks
// `image "ref" { entrypoint = [...] cmd = [...] env = {...} }`) otherwise.
// A relative command path containing a slash is taken relative to the file's
// directory.
func LoadImages(path string) (map[string]Image, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read images file: %w", err)
	}
	out := map[string]Image{}
	if strings.HasSuffix(path, ".json") {
		var wrapped struct {
			Images map[string]Image `json:"images"`
		}
		if err := json.Unmarshal(src, &wrapped); err != nil {
			return nil, fmt.Errorf("parse images file %s: %w", path, err)
		}
		if wrapped.Images != nil {
			out = wrapped.Images
		} else if err := json.Unmarshal(src, &out); err != nil {
			return nil, fmt.Errorf("parse images file %s: %w", path, err)
		}
	} else {
		var f imagesFile
		if err := hclsimple.Decode(filepath.Base(path)+".hcl", src, nil, &f); err != nil {
			return nil, fmt.Errorf("parse images file %s: %w", path, err)
		}
		for _, b := range f.Images {
			if _, dup := out[b.Ref]; dup {
				return nil, fmt.Errorf("images file %s: image %q declared twice", path, b.Ref)
			}
			out[b.Ref] = Image{Entrypoint: b.Entrypoint, Cmd: b.Cmd, Env: b.Env}
		}
	}
	base := filepath.Dir(path)
	for ref, img := range out {
		if len(img.Entrypoint) == 0 && len(img.Cmd) == 0 {
			return nil, fmt.Errorf("images file %s: image %q has neither entrypoint nor cmd", path, ref)
		}
		argv := img.Entrypoint
		if len(argv) == 0 {
			argv = img.Cmd
		}
		if p := argv[0]; !filepath.IsAbs(p) && strings.Contains(p, "/") {
			argv[0] = filepath.Join(base, p)
		}
		out[ref] = img
	}
	return out, nil
}
