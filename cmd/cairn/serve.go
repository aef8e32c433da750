package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/system"
	"github.com/cairn-ai/cairn/internal/vault"
)

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory")
	listen := fs.String("listen", "127.0.0.1:7700", "address to listen on (loopback unless told otherwise)")
	origin := fs.String("origin", "", "installation-unique checkpoint origin, fixed at first start (default: a random cairn.local/… name)")
	signingKey := fs.String("signing-key", "", "checkpoint signing key file (env CAIRN_SIGNING_KEY_FILE; default DATA/keys/signing.key)")
	kekPath := fs.String("kek", "", "key-encryption key file (env CAIRN_KEK_FILE; default DATA/keys/kek)")
	cpInterval := fs.Duration("checkpoint-interval", 50*time.Millisecond, "longest delay between an acknowledgement and the checkpoint covering it")
	dedup := fs.Duration("dedup-window", 10*time.Minute, "how long client event ids are remembered for idempotency")
	maxBody := fs.Int64("max-body", 64<<20, "largest request body in bytes")
	openEntries := fs.Bool("open-entries", false, "serve entry bundles without a token (they reveal ids, types and times)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate file (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key file (PEM)")
	clientCA := fs.String("client-ca", "", "require client certificates signed by this CA (PEM): mutual TLS")
	insecure := fs.Bool("insecure", false, "allow plaintext HTTP on a non-loopback address")
	keyringDir := fs.String("keyring", os.Getenv("CAIRN_KEYRING"), "directory of the KEK-wrapped period keys (env CAIRN_KEYRING; default DATA/keys/periods, or the database with --store)")
	oidcFile := fs.String("oidc", os.Getenv("CAIRN_OIDC"), "accept JWTs from an OpenID Connect provider, configured in this file (YAML or JSON: issuer, audience, groups → roles; env CAIRN_OIDC)")
	vaultKey := fs.String("vault-key", "", "token vault key file (env CAIRN_VAULT_KEY_FILE; default DATA/keys/vault.key); keep it apart from the KEK")
	vaultStore := fs.String("vault-store", os.Getenv("CAIRN_VAULT_STORE"), "keep the token vault in PostgreSQL (postgres://… with the vault's own credentials and schema as search_path; env CAIRN_VAULT_STORE) instead of DATA/vault; needed for vault policies on a PostgreSQL store")
	storeURL := fs.String("store", os.Getenv("CAIRN_STORE"), "keep the logs in PostgreSQL (postgres://…; env CAIRN_STORE) instead of DATA/logs; run 'cairn migrate' first")
	retentionEvery := fs.Duration("retention-interval", 24*time.Hour, "how often the retention worker archives and destroys what the schedules say is due (0: never; see 'cairn retention')")
	archiveDir := fs.String("archive", os.Getenv("CAIRN_ARCHIVE"), "directory archived months go to (env CAIRN_ARCHIVE; default DATA/archive)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	tlsCfg, err := serverTLS(*tlsCert, *tlsKey, *clientCA)
	if err != nil {
		return err
	}
	if tlsCfg == nil && !*insecure && !loopback(*listen) {
		return fmt.Errorf("refusing plaintext HTTP on %s, which is not a loopback address: give --tls-cert and --tls-key, or --insecure", *listen)
	}
	var oidcAuth *api.OIDC
	if *oidcFile != "" {
		if oidcAuth, err = loadOIDC(*oidcFile); err != nil {
			return err
		}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)
	p := defaultPaths(*data, *signingKey, *kekPath)
	if err := os.MkdirAll(p.data, 0o700); err != nil {
		return err
	}
	unlock, err := lockData(p.data)
	if err != nil {
		return err
	}
	defer unlock()
	if _, _, err := loadConfig(p, *origin, true); err != nil {
		return err
	}
	tokens, err := api.LoadTokens(p.tokens())
	if err != nil {
		return err
	}
	if tokens.Len() == 0 {
		tok, err := tokens.Create(api.Principal{Name: "admin", Roles: []string{api.RoleAdmin}})
		if err != nil {
			return err
		}
		if err := atomicfile.Write(p.adminToken(), []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created admin token:      %s\n", p.adminToken())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	op, err := openLedger(ctx, p, ledgerOptions{origin: *origin, keyringDir: *keyringDir, storeURL: *storeURL,
		vaultKey: *vaultKey, vaultStore: *vaultStore, cpInterval: *cpInterval, dedup: *dedup, logger: logger}, stdout)
	if err != nil {
		return err
	}
	l, cfg, keys, vlt := op.l, op.cfg, op.keys, op.vault
	if vlt != nil {
		defer vlt.Close()
	}
	idx, stopIndex, err := startIndex(ctx, p, l, logger)
	if err != nil {
		l.Close()
		return err
	}
	if *archiveDir == "" {
		*archiveDir = filepath.Join(p.data, "archive")
	}
	forget, _ := idx.(retention.Forgetter)
	rcfg := retention.Config{Ledger: l, Keys: keys, Archive: retention.Dir{Path: *archiveDir}, Index: forget, Logger: logger}
	if vlt != nil {
		rcfg.Subjects = vaultSubjects{l, vlt}
	}
	rw := retention.NewWorker(rcfg)
	stopRetention := func() {}
	if *retentionEvery > 0 {
		stopRetention = rw.Start(ctx, *retentionEvery)
	}
	reg, stopRegistry := startRegistry(ctx, l, logger)
	defer stopRegistry()
	apiServer := api.New(api.Config{MaxBody: *maxBody, OpenEntries: *openEntries, Vault: vlt, OIDC: oidcAuth, Retention: rw, Logger: logger}, l, tokens, idx)
	apiServer.SetRegistry(reg)
	srv := &http.Server{
		Handler:           apiServer,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.TLSConfig = tlsCfg
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		stopRetention()
		stopIndex()
		l.Close()
		return err
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
		ln = tls.NewListener(ln, tlsCfg)
	}
	fmt.Fprintf(stdout, "cairn serving on %s://%s (origin %s, data %s)\n", scheme, ln.Addr(), cfg.Origin, p.data)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			logger.Error("server stopped", "err", err)
		}
	}
	logger.Info("shutting down: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	stopRetention()
	stopIndex()
	stopRegistry()
	// Close commits whatever the sequencers hold and publishes final checkpoints.
	if err := l.Close(); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// serverTLS builds the TLS configuration from PEM files; nil when TLS is off.
func serverTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		if clientCA != "" {
			return nil, errors.New("--client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// loopback reports whether a listen address binds only the loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadOIDC reads the identity-provider configuration of `serve --oidc FILE`.
func loadOIDC(path string) (*api.OIDC, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".yaml" || ext == ".yml" {
		if b, err = system.YAMLToJSON(b); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
	}
	var cfg api.OIDCConfig
	if err := jsonv2.Unmarshal(b, &cfg, jsonv2.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	o, err := api.NewOIDC(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return o, nil
}

// vaultSubjects erases a data subject through the token vault, for retention: the vault entries behind a
// pseudonym in every domain of the system's current field policy.
type vaultSubjects struct {
	l *ledger.Ledger
	v *vault.Vault
}

func (s vaultSubjects) EraseSubject(ctx context.Context, system, pseudonym string) (string, error) {
	lg, err := s.l.Log(system)
	if err != nil {
		return "", err
	}
	d := lg.Definition()
	if d == nil || d.Policy == nil {
		return "the system's field policy vaults nothing", nil
	}
	n := 0
	for _, dom := range d.Policy.Domains() {
		k, err := s.v.Erase(ctx, dom, []string{pseudonym}, nil)
		if err != nil {
			return "", err
		}
		n += k
	}
	return fmt.Sprintf("erased %d vault entries", n), nil
}
