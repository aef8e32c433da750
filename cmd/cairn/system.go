package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/system"
)

func cmdSystem(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "apply" {
		fmt.Fprintln(stderr, "usage: cairn system apply -f FILE [--url URL] [--token-file F]")
		return errUsage
	}
	fs := flag.NewFlagSet("system apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "definition file (YAML or JSON)")
	url, tokenFile := clientFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *file == "" {
		return fmt.Errorf("-f FILE is required")
	}
	b, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	if ext := strings.ToLower(filepath.Ext(*file)); ext == ".yaml" || ext == ".yml" {
		if b, err = system.YAMLToJSON(b); err != nil {
			return fmt.Errorf("%s: %v", *file, err)
		}
	}
	if _, _, err := system.Parse(b); err != nil {
		return fmt.Errorf("%s: %v", *file, err)
	}
	c, err := newClient(*url, *tokenFile)
	if err != nil {
		return err
	}
	out, err := c.ApplySystem(context.Background(), b)
	if err != nil {
		return err
	}
	stdout.Write(out)
	return nil
}

// clientFlags adds the flags every command that talks to a server takes.
func clientFlags(fs *flag.FlagSet) (url, tokenFile *string) {
	url = fs.String("url", envOr("CAIRN_URL", "http://127.0.0.1:7700"), "server URL (env CAIRN_URL)")
	tokenFile = fs.String("token-file", envOr("CAIRN_TOKEN_FILE", "./cairn-data/admin.token"), "file holding a bearer token (env CAIRN_TOKEN_FILE; CAIRN_TOKEN takes the token itself)")
	return url, tokenFile
}

func newClient(url, tokenFile string) (*client.Client, error) {
	tok := os.Getenv("CAIRN_TOKEN")
	if tok == "" && tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return client.New(url, tok), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
