// Command imagehelper is the program of the test image the image-mode tests
// build (oci_test.go): a static binary that reports what it sees inside the
// container and does what a test asks of a machine.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		os.Exit(2)
	}
	switch os.Args[1] {
	case "idle":
		idle()
	case "report":
		// For machine exec: where and as whom it runs.
		wd, _ := os.Getwd()
		fmt.Printf("uid=%d cwd=%s var=%s\n", os.Getuid(), wd, os.Getenv("IMAGE_VAR"))
		os.Exit(3)
	case "alloc":
		// Allocate and touch N MB, then idle: a guest smaller than that is
		// killed by its memory limit.
		n, _ := strconv.Atoi(os.Args[2])
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
			if i%64 == 0 {
				fmt.Println("allocated MB", i)
			}
		}
		fmt.Println("allocated all", len(keep))
		time.Sleep(time.Hour)
	default:
		os.Exit(2)
	}
}

func idle() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	wd, _ := os.Getwd()
	host, _ := os.Hostname()
	fmt.Printf("uid=%d gid=%d cwd=%s host=%s pid=%d\n", os.Getuid(), os.Getgid(), wd, host, os.Getpid())
	for _, k := range []string{"IMAGE_VAR", "HOME", "PATH", "FLY_PRIVATE_IP", "FLY_MACHINE_ID", "HANGAR_FLY_API_SOCKET", "FLY_VM_MEMORY_MB"} {
		fmt.Printf("env %s=%s\n", k, os.Getenv(k))
	}
	// A change to the rootfs: the next start must not see it.
	if _, err := os.Stat("/var/marker"); err == nil {
		fmt.Println("rootfs stale")
	} else if err := os.WriteFile("/var/marker", []byte("x"), 0o644); err != nil {
		fmt.Println("rootfs write:", err)
	} else {
		fmt.Println("rootfs fresh")
	}
	fmt.Println("token", token())
	// A counter for the suspend test, in the container's /tmp.
	go func() {
		for i := 1; ; i++ {
			_ = os.WriteFile("/tmp/count.tmp", []byte(strconv.Itoa(i)), 0o644)
			_ = os.Rename("/tmp/count.tmp", "/tmp/count")
			time.Sleep(20 * time.Millisecond)
		}
	}()
	s := <-sig
	fmt.Println("got", s)
	os.Exit(0)
}

// token asks the machine's local API for an OIDC token, as the agent does.
func token() string {
	path := os.Getenv("HANGAR_FLY_API_SOCKET")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
	resp, err := c.Post("http://localhost/v1/tokens/oidc", "application/json", strings.NewReader(`{"aud":"test"}`))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.Count(string(b), ".") != 2 {
		return fmt.Sprintf("error: %d %s", resp.StatusCode, b)
	}
	return "ok"
}
