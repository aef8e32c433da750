package main

import (
	"context"
	"crypto/ed25519"
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
	"syscall"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
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
	keyringDir := fs.String("keyring", os.Getenv("CAIRN_KEYRING"), "directory of the KEK-wrapped period keys (env CAIRN_KEYRING; default DATA/keys/periods); nodes sharing a PostgreSQL store must share it")
	storeURL := fs.String("store", os.Getenv("CAIRN_STORE"), "keep the logs in PostgreSQL (postgres://…; env CAIRN_STORE) instead of DATA/logs; run 'cairn migrate' first")
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
	cfg, created, err := loadConfig(p, *origin, true)
	if err != nil {
		return err
	}
	sk, skNew, err := ledger.LoadSigningKey(p.signingKey, true)
	if err != nil {
		return err
	}
	if skNew || created {
		if err := writePublicKey(p, sk.Public().(ed25519.PublicKey)); err != nil {
			return err
		}
	}
	kek, kekNew, err := seal.LoadKEK(p.kek, true)
	if err != nil {
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
	if skNew {
		fmt.Fprintf(stdout, "created signing key:      %s (public key: %s)\n", p.signingKey, p.publicKey())
	}
	if kekNew {
		fmt.Fprintf(stdout, "created key-encryption key: %s\n", p.kek)
	}
	if skNew || kekNew {
		fmt.Fprintln(stdout, "in production keep the signing key and the KEK outside the data directory (--signing-key, --kek)")
	}
	kr := p.keyring()
	if *keyringDir != "" {
		kr = *keyringDir
	}
	keys, err := seal.OpenKeyring(kr, kek)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var st store.Store
	if *storeURL != "" {
		st, err = pg.Open(ctx, *storeURL, pg.Options{Logger: logger})
	} else {
		st, err = local.Open(p.data, local.Options{Logger: logger})
	}
	if err != nil {
		return err
	}
	defer stop()
	l, err := ledger.Open(ctx, ledger.Config{Origin: cfg.Origin, CheckpointInterval: *cpInterval, DedupWindow: *dedup, Logger: logger}, st, keys, sk)
	if err != nil {
		st.Close()
		return err
	}
	idx, stopIndex, err := startIndex(ctx, p, l, logger)
	if err != nil {
		l.Close()
		return err
	}
	reg, stopRegistry := startRegistry(ctx, l, logger)
	defer stopRegistry()
	apiServer := api.New(api.Config{MaxBody: *maxBody, OpenEntries: *openEntries, Logger: logger}, l, tokens, idx)
	apiServer.SetRegistry(reg)
	srv := &http.Server{
		Handler:           apiServer,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.TLSConfig = tlsCfg
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
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
