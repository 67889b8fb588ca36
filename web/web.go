// Package web serves hangar's browser terminal. The full UI is an npm project
// in this directory (xterm.js bundled with esbuild into dist/, which is not
// committed); `make web` builds it and the next Go build embeds it. A clean
// checkout has no dist/, so a small committed page that explains how to build
// the UI is served instead and `go build ./...` always works.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The pattern "dist*" always matches dist-placeholder, and also dist once the
// bundle has been built, so the embed never fails on a clean checkout.
//
//go:embed dist*
var files embed.FS

// Built reports whether the full UI bundle (dist/) was embedded at build time.
func Built() bool {
	_, err := fs.Stat(files, "dist/index.html")
	return err == nil
}

func root() fs.FS {
	dir := "dist-placeholder"
	if Built() {
		dir = "dist"
	}
	sub, err := fs.Sub(files, dir)
	if err != nil {
		// fs.Sub fails only for an invalid path, which dir never is.
		panic(err)
	}
	return sub
}

// Handler serves the web terminal: index.html at "/" (and for any path that
// is not a file of the bundle, so that client-side routes survive a reload),
// and the bundle's assets by path. Mount it at "/" after the API routes.
func Handler() http.Handler {
	fsys := root()
	fileServer := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" || name == "index.html" {
			serveIndex(w, r, fsys)
			return
		}
		if fi, err := fs.Stat(fsys, name); err == nil && !fi.IsDir() {
			if strings.HasPrefix(name, "assets/") {
				// Asset names carry a content hash (esbuild), so they never change.
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			}
			fileServer.ServeHTTP(w, r)
			return
		}
		if path.Ext(name) != "" {
			http.NotFound(w, r)
			return
		}
		serveIndex(w, r, fsys)
	})
}

func serveIndex(w http.ResponseWriter, r *http.Request, fsys fs.FS) {
	b, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		http.Error(w, "web UI missing from this build", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}
