package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/hangarhq/hangar/internal/agentauth"
)

func init() {
	register("keygen", "make a broker key (shared by all replicas) and print its public key", runKeygen)
}

func runKeygen(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	out := fs.String("out", "", "write the private key to this file (mode 0600; refuses to overwrite); default: stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	key, err := agentauth.GenerateKey()
	if err != nil {
		return err
	}
	priv := agentauth.EncodePrivateKey(key) + "\n"
	pub := agentauth.EncodePublicKey(key.Public().(ed25519.PublicKey))
	if *out == "" {
		fmt.Print(priv)
		fmt.Fprintf(os.Stderr, "public key (HANGAR_BROKER_PUBLIC_KEY): %s\n", pub)
		return nil
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting a broker key", *out)
	}
	if err != nil {
		return fmt.Errorf("write broker key: %w", err)
	}
	if _, err := f.WriteString(priv); err != nil {
		f.Close()
		return fmt.Errorf("write broker key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write broker key: %w", err)
	}
	fmt.Println(pub)
	return nil
}
