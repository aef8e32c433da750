package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, strings.Split(v, ",")...); return nil }

const tokenUsage = `usage: cairn token create --data DIR --principal NAME --role ROLE [--system S]... [--expires-in 720h]
       cairn token list   --data DIR
       cairn token revoke --data DIR (ID | --token-file F)`

// cmdToken administers the token file directly; a running server picks up changes on its next request.
func cmdToken(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, tokenUsage)
		return errUsage
	}
	switch args[0] {
	case "create":
		return tokenCreate(args[1:], stdout, stderr)
	case "list":
		return tokenList(args[1:], stdout, stderr)
	case "revoke":
		return tokenRevoke(args[1:], stdout, stderr)
	}
	fmt.Fprintln(stderr, tokenUsage)
	return errUsage
}

// openTokens opens the token file of the data directory data.
func openTokens(data string) (*api.Tokens, error) {
	p := defaultPaths(data, "", "")
	if _, _, err := loadConfig(p, "", false); err != nil {
		return nil, err
	}
	t, err := api.LoadTokens(p.tokens())
	if err != nil {
		return nil, err
	}
	// The server records changes made through the file in _admin, attributed to whoever ran the command.
	t.SetBy(cliActor())
	return t, nil
}

// cliActor names the operating-system user running a command, as an _admin record's actor: "cli:USER".
func cliActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return "cli:" + u
	}
	return "cli:unknown"
}

func tokenCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory")
	principal := fs.String("principal", "", "who the token stands for")
	expires := fs.Duration("expires-in", 0, "how long the token is valid, e.g. 720h (default no expiry)")
	var roles, systems listFlag
	fs.Var(&roles, "role", "role: "+strings.Join(api.Roles, ", ")+" (repeatable)")
	fs.Var(&systems, "system", "limit the token to a system (repeatable; default all)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *principal == "" || len(roles) == 0 {
		return fmt.Errorf("--principal and --role are required")
	}
	p := api.Principal{Name: *principal, Roles: roles, Systems: systems}
	if err := p.Validate(); err != nil {
		var fe *api.TokenFieldError
		if errors.As(err, &fe) && strings.HasPrefix(fe.Field, "/roles/") {
			return fmt.Errorf("--role %q: %s", roles[fieldIndex(fe.Field)], fe.Reason)
		}
		return err
	}
	if *expires < 0 {
		return fmt.Errorf("--expires-in must be positive")
	}
	t, err := openTokens(*data)
	if err != nil {
		return err
	}
	tok, ti, err := t.Issue(p, *expires)
	if err != nil {
		return err
	}
	// The token alone on stdout, so scripts can capture it; its id for later revocation on stderr.
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "token id: %s\n", ti.ID)
	return nil
}

func tokenList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, tokenUsage)
		return errUsage
	}
	t, err := openTokens(*data)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPRINCIPAL\tROLES\tSYSTEMS\tSTATE\tCREATED\tEXPIRES")
	for _, ti := range t.List() {
		systems, created, expires := "*", "-", "-"
		if len(ti.Systems) > 0 {
			systems = strings.Join(ti.Systems, ",")
		}
		if !ti.Created.IsZero() {
			created = ti.Created.UTC().Format(time.RFC3339)
		}
		if ti.Expires != nil {
			expires = ti.Expires.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ti.ID, ti.Name, strings.Join(ti.Roles, ","), systems, ti.State(now), created, expires)
	}
	return tw.Flush()
}

func tokenRevoke(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory")
	tokenFile := fs.String("token-file", "", "revoke the token in this file instead of naming its id")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 1 && (*tokenFile == "" || fs.NArg() != 0) {
		fmt.Fprintln(stderr, tokenUsage)
		return errUsage
	}
	t, err := openTokens(*data)
	if err != nil {
		return err
	}
	id := fs.Arg(0)
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		ti, ok := t.Lookup(strings.TrimSpace(string(b)))
		if !ok {
			return fmt.Errorf("%s: %w", *tokenFile, api.ErrUnknownToken)
		}
		id = ti.ID
	}
	ti, err := t.Revoke(id)
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	fmt.Fprintf(stdout, "revoked %s (%s)\n", ti.ID, ti.Name)
	return nil
}

// fieldIndex is the array index at the end of a JSON Pointer such as /roles/2.
func fieldIndex(ptr string) int {
	n, _ := strconv.Atoi(ptr[strings.LastIndexByte(ptr, '/')+1:])
	return n
}
