package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/cairn-ai/cairn/internal/event"
)

var (
	cliOnce sync.Once
	cliDir  string
	cliErr  error
)

// cliBinary builds the cairn binary once per test run.
func cliBinary(t *testing.T) string {
	cliOnce.Do(func() {
		cliDir, cliErr = os.MkdirTemp("", "cairn-cli-")
		if cliErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(cliDir, "cairn"), ".").CombinedOutput()
		if err != nil {
			cliErr = err
			cliDir = string(out)
		}
	})
	if cliErr != nil {
		t.Fatalf("build cairn: %v\n%s", cliErr, cliDir)
	}
	return cliDir
}

// TestScripts runs the CLI scripts in testdata/script against the real binary.
func TestScripts(t *testing.T) {
	bin := cliBinary(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", bin+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("XDG_STATE_HOME", filepath.Join(env.WorkDir, "state"))
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			env.Setenv("PORT", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
			return l.Close()
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// waitserver PORT: wait until the server answers /healthz.
			"waitserver": func(ts *testscript.TestScript, neg bool, args []string) {
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					resp, err := http.Get("http://127.0.0.1:" + args[0] + "/healthz")
					if err == nil {
						resp.Body.Close()
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				ts.Fatalf("server on port %s did not come up", args[0])
			},
			// uuid7 NAME...: set each variable to a fresh UUIDv7 (an event id within the idempotency window).
			"uuid7": func(ts *testscript.TestScript, neg bool, args []string) {
				for _, name := range args {
					ts.Setenv(name, event.NewV7(time.Now()).String())
				}
			},
			// expandfile FILE: write FILE.expanded with $VARIABLES expanded.
			"expandfile": func(ts *testscript.TestScript, neg bool, args []string) {
				body, _ := os.ReadFile(ts.MkAbs(args[0]))
				os.WriteFile(ts.MkAbs(args[0]+".expanded"), []byte(os.Expand(string(body), ts.Getenv)), 0o600)
			},
			// postenv URL TOKENFILE BODYFILE: post with $VARIABLES in the body expanded.
			"postenv": func(ts *testscript.TestScript, neg bool, args []string) {
				body, _ := os.ReadFile(ts.MkAbs(args[2]))
				tmp := ts.MkAbs(args[2] + ".expanded")
				os.WriteFile(tmp, []byte(os.Expand(string(body), ts.Getenv)), 0o600)
				post(ts, neg, []string{args[0], args[1], tmp})
			},
			"post": post,
			// get URL TOKENFILE: GET with a bearer token; prints the answer's body alone (so it can be saved with
			// cp stdout FILE); fails on a status of 300 or more unless negated.
			"get": func(ts *testscript.TestScript, neg bool, args []string) {
				tok, _ := os.ReadFile(ts.MkAbs(args[1]))
				req, _ := http.NewRequest("GET", args[0], nil)
				req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					ts.Fatalf("get: %v", err)
				}
				defer resp.Body.Close()
				var b bytes.Buffer
				b.ReadFrom(resp.Body)
				ts.Stdout().Write(b.Bytes())
				if (resp.StatusCode >= 300) != neg {
					ts.Fatalf("get: unexpected status %s", resp.Status)
				}
			},
		},
	})
}

// post URL TOKENFILE BODYFILE: POST a body with a bearer token; prints the status and the answer.
func post(ts *testscript.TestScript, neg bool, args []string) {
	tok, _ := os.ReadFile(ts.MkAbs(args[1]))
	body, _ := os.ReadFile(ts.MkAbs(args[2]))
	req, _ := http.NewRequest("POST", args[0], bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	ts.Stdout().Write([]byte(resp.Status + "\n" + b.String()))
	if (resp.StatusCode >= 300) != neg {
		ts.Fatalf("post: unexpected status %s", resp.Status)
	}
}
