package flyemu

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// ImageStore is the emulator's local image store: an OCI image layout
// directory (index.json and blobs/sha256/...), as `buildah push IMAGE
// oci:DIR:REF` or `skopeo copy` write it, with each image's ref in the
// org.opencontainers.image.ref.name annotation (scripts/worker-image.sh
// exports the worker image there). Nothing is pulled: a machine whose image
// is not in the store runs as a plain process. Each image's rootfs is
// unpacked once, read-only, under <dir>/.rootfs/<manifest digest>; machines
// get a fresh writable layer over it at every start.
type ImageStore struct {
	dir string

	mu     sync.Mutex
	unpack map[string]*sync.Mutex // per manifest digest: one unpacker at a time
}

// OpenImageStore opens the OCI layout at dir; a missing index is an empty
// store (images may be exported into it later).
func OpenImageStore(dir string) (*ImageStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	return &ImageStore{dir: abs, unpack: map[string]*sync.Mutex{}}, nil
}

// Dir is the store's directory.
func (s *ImageStore) Dir() string { return s.dir }

// StoredImage is one image of the store.
type StoredImage struct {
	Ref    string // the ref it was found under
	Digest string // the manifest's digest ("sha256:...")
	Config OCIImageConfig
	layers []ociDescriptor
}

// OCIImageConfig is the part of an OCI image config a machine's start uses.
type OCIImageConfig struct {
	User        string            `json:"User,omitempty"`
	Entrypoint  []string          `json:"Entrypoint,omitempty"`
	Cmd         []string          `json:"Cmd,omitempty"`
	Env         []string          `json:"Env,omitempty"`
	WorkingDir  string            `json:"WorkingDir,omitempty"`
	StopSignal  string            `json:"StopSignal,omitempty"`
	Labels      map[string]string `json:"Labels,omitempty"`
	ExposedPort map[string]any    `json:"ExposedPorts,omitempty"`
}

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// Lookup finds ref in the store: the exact ref, else the same name with or
// without a "localhost/" or "docker.io/library/" prefix, or with ":latest"
// added. The index is read at every call, so that images exported while the
// emulator runs are seen.
func (s *ImageStore) Lookup(ref string) (*StoredImage, bool, error) {
	if s == nil || ref == "" {
		return nil, false, nil
	}
	var index struct {
		Manifests []ociDescriptor `json:"manifests"`
	}
	if err := s.readJSON(filepath.Join(s.dir, "index.json"), &index); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, err
	}
	want := refVariants(ref)
	for _, w := range want {
		for _, d := range index.Manifests {
			if d.Annotations[refNameAnnotation] != w {
				continue
			}
			img, err := s.load(ref, d)
			if err != nil {
				return nil, false, fmt.Errorf("image %s in store %s: %w", ref, s.dir, err)
			}
			return img, true, nil
		}
	}
	return nil, false, nil
}

// refVariants lists the names ref may be stored under, most exact first.
func refVariants(ref string) []string {
	names := []string{ref}
	for _, p := range []string{"localhost/", "docker.io/library/", "docker.io/"} {
		if rest, ok := strings.CutPrefix(ref, p); ok {
			names = append(names, rest)
		}
	}
	for _, n := range append([]string(nil), names...) {
		names = append(names, "localhost/"+n)
	}
	for _, n := range append([]string(nil), names...) {
		last := n[strings.LastIndex(n, "/")+1:]
		if !strings.Contains(last, ":") && !strings.Contains(last, "@") {
			names = append(names, n+":latest")
		}
	}
	return names
}

func (s *ImageStore) load(ref string, d ociDescriptor) (*StoredImage, error) {
	var manifest struct {
		MediaType string          `json:"mediaType"`
		Config    ociDescriptor   `json:"config"`
		Layers    []ociDescriptor `json:"layers"`
	}
	if err := s.readJSON(s.blobPath(d.Digest), &manifest); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var cfg struct {
		Config OCIImageConfig `json:"config"`
	}
	if err := s.readJSON(s.blobPath(manifest.Config.Digest), &cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &StoredImage{Ref: ref, Digest: d.Digest, Config: cfg.Config, layers: manifest.Layers}, nil
}

func (s *ImageStore) blobPath(digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(s.dir, "blobs", filepath.Base(algo), filepath.Base(hex))
}

func (s *ImageStore) readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// LayerReaders opens each layer of img as an uncompressed tar stream, in
// order; the caller closes them. Tests inspect images with it.
func (s *ImageStore) LayerReaders(img *StoredImage) ([]io.ReadCloser, error) {
	var out []io.ReadCloser
	for _, l := range img.layers {
		rc, err := s.openLayer(l)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, rc)
	}
	return out, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// gunzip decompresses f and closes it when closed. The system's gzip, when
// there is one, does the work in its own process: on another core than the
// tar reader, and outside the race detector, whose instrumentation makes Go's
// inflate about twenty times slower in -race tests (the worker image's layers
// are hundreds of MB). Go's gzip otherwise.
func gunzip(f *os.File) (io.ReadCloser, error) {
	bin, err := exec.LookPath("gzip")
	if err != nil {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
	}
	cmd := exec.Command(bin, "-dc")
	cmd.Stdin = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gzip: %w", err)
	}
	return &gzipProcess{cmd: cmd, out: out, file: f, stderr: &stderr}, nil
}

// gzipProcess reads a gzip process's output; a failed decompression (a
// corrupt blob) is the error at the end of the stream.
type gzipProcess struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	file   *os.File
	stderr *bytes.Buffer
	waited bool
	err    error
}

func (g *gzipProcess) Read(p []byte) (int, error) {
	if g.waited {
		return 0, g.err
	}
	n, err := g.out.Read(p)
	if err == io.EOF {
		// All output read: Wait may close the pipe now.
		g.waited = true
		if werr := g.cmd.Wait(); werr != nil {
			g.err = fmt.Errorf("gzip: %w: %s", werr, strings.TrimSpace(g.stderr.String()))
		} else {
			g.err = io.EOF
		}
		return n, g.err
	}
	return n, err
}

func (g *gzipProcess) Close() error {
	if !g.waited {
		// Closed before the end (a reader that found what it wanted).
		g.waited, g.err = true, os.ErrClosed
		_ = g.cmd.Process.Kill()
		_ = g.cmd.Wait()
	}
	return g.file.Close()
}

func (s *ImageStore) openLayer(l ociDescriptor) (io.ReadCloser, error) {
	f, err := os.Open(s.blobPath(l.Digest))
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	switch {
	case strings.HasSuffix(l.MediaType, "+gzip") || strings.HasSuffix(l.MediaType, ".gzip"):
		rc, err := gunzip(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		return rc, nil
	case strings.HasSuffix(l.MediaType, ".tar") || strings.HasSuffix(l.MediaType, ".diff.tar"):
		return f, nil
	}
	f.Close()
	return nil, fmt.Errorf("layer %s: unsupported media type %q", l.Digest, l.MediaType)
}

// Rootfs returns the directory holding img's unpacked layers, unpacking them
// the first time. Nothing may write to it: machines mount a writable layer
// over it.
func (s *ImageStore) Rootfs(img *StoredImage) (string, error) {
	_, hex, _ := strings.Cut(img.Digest, ":")
	dst := filepath.Join(s.dir, ".rootfs", filepath.Base(hex))
	s.mu.Lock()
	l := s.unpack[hex]
	if l == nil {
		l = &sync.Mutex{}
		s.unpack[hex] = l
	}
	s.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	// Unpack beside the final place and rename, so that a crash never
	// leaves a half rootfs that looks complete.
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return "", err
	}
	defer root.Close()
	for _, layer := range img.layers {
		rc, err := s.openLayer(layer)
		if err != nil {
			return "", err
		}
		err = applyLayer(root, rc)
		rc.Close()
		if err != nil {
			return "", fmt.Errorf("unpack layer %s: %w", layer.Digest, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// applyLayer applies one OCI layer (with its whiteouts) to root. os.Root
// keeps every path, symlinks included, inside the rootfs.
func applyLayer(root *os.Root, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if name == "." || name == ".." || strings.HasPrefix(name, "../") {
			continue
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if base == ".wh..wh..opq" {
			// Opaque directory: what lower layers put in it is gone.
			if err := clearDir(root, dir); err != nil {
				return err
			}
			continue
		}
		if victim, ok := strings.CutPrefix(base, ".wh."); ok {
			if err := root.RemoveAll(path.Join(dir, victim)); err != nil {
				return err
			}
			continue
		}
		if dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		mode := h.FileInfo().Mode()
		if fi, err := root.Lstat(name); err == nil && !(fi.IsDir() && h.Typeflag == tar.TypeDir) {
			if err := root.RemoveAll(name); err != nil {
				return err
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
			_ = root.Lchown(name, h.Uid, h.Gid)
			continue
		case tar.TypeLink:
			target := path.Clean(strings.TrimPrefix(h.Linkname, "/"))
			if err := root.Link(target, name); err != nil {
				return err
			}
			continue
		default:
			// Devices and fifos: runc provides /dev; images carry none
			// that matter.
			continue
		}
		if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
			return err
		}
		// After chown, which clears set-id bits.
		if err := root.Chmod(name, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
}

// clearDir removes dir's entries, keeping dir.
func clearDir(root *os.Root, dir string) error {
	f, err := root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := root.RemoveAll(path.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// asImage is what the machine's start reads from the image config.
func (img *StoredImage) asImage() Image {
	env := map[string]string{}
	for _, kv := range img.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return Image{Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd, Env: env}
}

// home is the image's HOME, else /root or / as a runtime would pick.
func (img *StoredImage) home() string {
	for _, kv := range img.Config.Env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok && v != "" {
			return v
		}
	}
	if img.Config.User == "" || img.Config.User == "root" || strings.HasPrefix(img.Config.User, "0") {
		return "/root"
	}
	return "/"
}

// Refs lists the refs the store holds.
func (s *ImageStore) Refs() ([]string, error) {
	var index struct {
		Manifests []ociDescriptor `json:"manifests"`
	}
	if err := s.readJSON(filepath.Join(s.dir, "index.json"), &index); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, d := range index.Manifests {
		if r := d.Annotations[refNameAnnotation]; r != "" {
			out = append(out, r)
		}
	}
	return out, nil
}

// PrepareImage unpacks ref's rootfs if the store holds it, so that the first
// machine of the image does not wait for it (the unpack of a large image
// takes seconds, during which the emulator would answer nothing else). It
// reports whether the store holds ref.
func (e *Emulator) PrepareImage(ref string) (bool, error) {
	img, ok, err := e.images.Lookup(ref)
	if !ok || err != nil {
		return false, err
	}
	_, err = e.images.Rootfs(img)
	return err == nil, err
}

// ImageStore is the emulator's image store, nil without Config.ImageStore.
func (e *Emulator) ImageStore() *ImageStore { return e.images }
