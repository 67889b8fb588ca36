// Package chaos is hangar's chaos run (make chaos; never part of make
// test): real hangard processes against the Fly emulator running the real
// agent, under kill -9 loops (SQLite, and two replicas on Postgres), Fly
// faults before and after Fly acts, a frozen agent, a partitioned worker and
// store faults. It prints one table: sessions ready, failed with a reason
// and stuck, double claims, orphan machine-seconds, bytes lost, and the
// daemon's RSS, open files and goroutines before and after.
//
// The run is a Go test behind the build tag "chaos" so that it can use the
// test helpers (throw-away Postgres, emulator, binaries):
//
//	go test -tags chaos -v -count=1 -timeout 30m ./test/chaos [-args -chaos.rounds 5 -chaos.only sqlite,pg]
package chaos
