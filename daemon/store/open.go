package store

import (
	"context"
	"fmt"
	"strings"
)

// Open connects to the store named by dsn and brings its schema up to date:
//
//   - "sqlite:///abs/path.db", "sqlite://relative.db", a plain path ending in
//     ".db", or a "file:" URI → SQLite (one replica);
//   - "postgres://…" or "postgresql://…" → Postgres (any number of replicas).
//
// Anything else is an error that names the accepted forms.
func Open(ctx context.Context, dsn string) (Store, error) {
	switch {
	case hasPrefixFold(dsn, "postgres://"), hasPrefixFold(dsn, "postgresql://"):
		return OpenPostgres(ctx, dsn)
	case hasPrefixFold(dsn, "sqlite://"):
		rest := dsn[len("sqlite://"):]
		path, query, _ := strings.Cut(rest, "?")
		if path == "" {
			return nil, fmt.Errorf("open store: sqlite DSN %q names no file", dsn)
		}
		return asStore(openSQLite(ctx, path, query))
	case hasPrefixFold(dsn, "file:"):
		path, query, _ := strings.Cut(dsn[len("file:"):], "?")
		if path == "" {
			return nil, fmt.Errorf("open store: sqlite DSN %q names no file", dsn)
		}
		return asStore(openSQLite(ctx, path, query))
	case strings.HasSuffix(dsn, ".db"):
		return asStore(openSQLite(ctx, dsn, ""))
	case dsn == "":
		return nil, fmt.Errorf("open store: empty DSN (want sqlite:///path.db, a path ending in .db, file:…, or postgres://…)")
	default:
		// Name only the scheme: a mistyped Postgres URL may carry a password.
		scheme := "no scheme"
		if i := strings.Index(dsn, "://"); i > 0 {
			scheme = "scheme " + fmt.Sprintf("%q", dsn[:i])
		}
		return nil, fmt.Errorf("open store: unsupported DSN (%s): want sqlite:///path.db, sqlite://relative.db, a path ending in .db, file:…, postgres:// or postgresql://", scheme)
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// asStore keeps a failed open from returning a non-nil Store holding a nil
// pointer.
func asStore(s *sqliteStore, err error) (Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// SQLitePath returns the file of a SQLite DSN (in any form Open accepts),
// and false for any other DSN.
func SQLitePath(dsn string) (string, bool) {
	var rest string
	switch {
	case hasPrefixFold(dsn, "postgres://"), hasPrefixFold(dsn, "postgresql://"):
		return "", false
	case hasPrefixFold(dsn, "sqlite://"):
		rest = dsn[len("sqlite://"):]
	case hasPrefixFold(dsn, "file:"):
		rest = dsn[len("file:"):]
	case strings.HasSuffix(dsn, ".db"):
		rest = dsn
	default:
		return "", false
	}
	path, _, _ := strings.Cut(rest, "?")
	return path, path != ""
}
