// Command cairn is the record-keeping engine for high-risk AI systems: one binary that serves the log, and
// verifies, administers and benchmarks it.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `cairn — tamper-evident record keeping for high-risk AI systems

Usage:
  cairn serve   [--data DIR] [--listen ADDR] [--origin NAME]   run the server
  cairn system  apply -f FILE [--url URL] [--token-file F]     register or update an AI system (YAML or JSON)
  cairn verify  --data DIR [--full] [--state FILE]             verify a stopped store offline
  cairn verify  --url URL --system S --vkey KEY [--state F]    verify a remote log through its tiles
  cairn verify  proof --vkey KEY FILE.tlog-proof               verify one event's C2SP tlog proof offline
  cairn reindex --data DIR                                     rebuild tree hashes and the query index from the segments
  cairn migrate --store postgres://…                           create or upgrade the PostgreSQL store's schema
  cairn copy    --from DIR|postgres://… --to DIR|postgres://…  copy every log between stores, checkpoints intact
  cairn token   create --data DIR --principal P --role R ...   create an API token
  cairn token   list --data DIR | revoke --data DIR ID         list or revoke API tokens
  cairn keys    rotate --data DIR [--kek F] --new-kek F         re-wrap the keyring under a new key-encryption key
  cairn keys    rotate-signing --data DIR --new-signing-key F   replace the checkpoint signing key (handover cosigned)
  cairn reidentify --system S --purpose TEXT PN...             reverse vaulted pseudonyms (dpo; recorded first)
  cairn vault   erase --domain D (--pseudonym PN | --value V)  forget a subject: delete its token-vault entries
  cairn retention run|report|hold|release --data DIR ...       archive, crypto-shred and report by schedule; legal holds
  cairn proxy   --upstream URL --system S [--data DIR|--url URL] record every call to a model server
  cairn bench   [flags]                                        measure ingest, proofs and storage
  cairn audit   live|models|lineage|reconstruct|check ...     model lifecycle and the tabletop audit
  cairn export  --system S --event ID -o FILE                 write an event's evidence bundle
  cairn verify  bundle [--vkey KEY] FILE                      check an evidence bundle offline
  cairn mlflow  sync --mlflow-uri URL --system S [--watch D]  record MLflow runs, datasets, versions and aliases
  cairn docs    generate KIND --system S [--model-version V] [--at T] [--format md|html|json|pdf]
  cairn docs    sign|list ...                                 sign a generated document; list recorded ones
  cairn gate    check --system S --model-version V --policy F compliance gate for CI/CD (exit 0 only if it holds)
  cairn verify  document FILE [--vkey K] [--signature S ...]   check a generated document and its signatures
  cairn version

Run 'cairn COMMAND -h' for a command's flags.
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes a command line and returns the exit status; errors are one line on stderr.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) error{
		"serve":      cmdServe,
		"system":     cmdSystem,
		"verify":     cmdVerify,
		"reindex":    cmdReindex,
		"migrate":    cmdMigrate,
		"copy":       cmdCopy,
		"token":      cmdToken,
		"keys":       cmdKeys,
		"reidentify": cmdReidentify,
		"vault":      cmdVault,
		"retention":  cmdRetention,
		"proxy":      cmdProxy,
		"audit":      cmdAudit,
		"export":     cmdExport,
		"mlflow":     cmdMLflow,
		"docs":       cmdDocs,
		"gate":       cmdGate,
		"bench":      cmdBench,
		"version":    func([]string, io.Writer, io.Writer) error { fmt.Fprintln(stdout, "cairn", version); return nil },
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "cairn: unknown command %q (run 'cairn help')\n", args[0])
		return 2
	}
	if err := cmd(args[1:], stdout, stderr); err != nil {
		if err == errUsage {
			return 2
		}
		if ef, ok := err.(exitError); ok {
			return int(ef)
		}
		fmt.Fprintf(stderr, "cairn %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// exitError ends a command with a status after it has printed its own report.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

var errUsage = fmt.Errorf("usage")
