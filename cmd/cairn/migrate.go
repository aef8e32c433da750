package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/cairn-ai/cairn/internal/store/pg"
)

func cmdMigrate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("store", os.Getenv("CAIRN_STORE"), "PostgreSQL URL (postgres://…; env CAIRN_STORE)")
	schema := fs.String("schema", "", "PostgreSQL schema holding Cairn's tables (default: the connection's search_path)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *url == "" {
		return fmt.Errorf("--store postgres://… is required")
	}
	if err := pg.Migrate(context.Background(), *url, pg.Options{Schema: *schema}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema at version %d\n", pg.SchemaVersion())
	return nil
}
