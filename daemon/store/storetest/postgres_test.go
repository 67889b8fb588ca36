package storetest

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Two clusters run side by side (as when tests of several packages start
// theirs), each serves its own database, and each is gone after its test.
func TestStartPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-unit): PostgreSQL tests run in make test")
	}
	var dsns [2]string
	t.Run("start", func(t *testing.T) {
		for i := range dsns {
			dsns[i] = StartPostgres(t)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i, dsn := range dsns {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatalf("connect to cluster %d: %v", i, err)
			}
			var db string
			if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil || db != "hangar" {
				t.Fatalf("cluster %d serves database %q, %v; want hangar", i, db, err)
			}
			if _, err := conn.Exec(ctx, `CREATE TABLE only_here (x int)`); err != nil {
				t.Fatalf("cluster %d: %v", i, err)
			}
			conn.Close(ctx)
		}
		fresh := CreateDatabase(t, dsns[0])
		conn, err := pgx.Connect(ctx, fresh)
		if err != nil {
			t.Fatalf("connect to a created database: %v", err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_here'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("created database is not empty: %d, %v", n, err)
		}
	})
	for i, dsn := range dsns {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		dir := u.Query().Get("host")
		if dir == "" {
			t.Fatalf("dsn %q names no socket directory", dsn)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cluster %d: directory %s still there after its test (%v)", i, dir, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Close(ctx)
			t.Errorf("cluster %d still accepts connections after its test", i)
		}
		cancel()
	}
}
