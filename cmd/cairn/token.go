package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cairn-ai/cairn/internal/api"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, strings.Split(v, ",")...); return nil }

func cmdToken(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "usage: cairn token create --data DIR --principal NAME --role ROLE [--system S]...")
		return errUsage
	}
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory")
	principal := fs.String("principal", "", "who the token stands for")
	var roles, systems listFlag
	fs.Var(&roles, "role", "role: ingest, reviewer, auditor, dpo, admin (repeatable)")
	fs.Var(&systems, "system", "limit the token to a system (repeatable; default all)")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *principal == "" || len(roles) == 0 {
		return fmt.Errorf("--principal and --role are required")
	}
	for _, r := range roles {
		if !slices.Contains([]string{api.RoleIngest, api.RoleReviewer, api.RoleAuditor, api.RoleDPO, api.RoleAdmin}, r) {
			return fmt.Errorf("unknown role %q", r)
		}
	}
	p := defaultPaths(*data, "", "")
	if _, _, err := loadConfig(p, "", false); err != nil {
		return err
	}
	t, err := api.LoadTokens(p.tokens())
	if err != nil {
		return err
	}
	tok, err := t.Create(api.Principal{Name: *principal, Roles: roles, Systems: systems})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
