package mlflow

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhook is an http.Handler for MLflow webhook deliveries (MLflow 3 OSS, SQL backends). Each delivery whose
// signature checks out triggers a sync; the payload itself is not trusted or recorded, since the sync reads the
// server's state, and MLflow's payloads name no authenticated actor.
type Webhook struct {
	Secret  []byte
	Trigger chan<- struct{}
	// MaxSkew bounds how old a delivery's timestamp may be (default 5 minutes), against replays.
	MaxSkew time.Duration
	Logger  *slog.Logger
}

// Verify checks a delivery's X-MLflow-Signature: "v1," + base64(HMAC-SHA256(secret, id + "." + timestamp + "." + body)).
func Verify(secret []byte, id, timestamp, signature string, body []byte) error {
	sig, ok := strings.CutPrefix(signature, "v1,")
	if !ok {
		return errors.New("signature: not v1")
	}
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return errors.New("signature: not base64")
	}
	m := hmac.New(sha256.New, secret)
	io.WriteString(m, id+"."+timestamp+".")
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return errors.New("signature does not match")
	}
	return nil
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return
	}
	ts := r.Header.Get("X-MLflow-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	skew := h.MaxSkew
	if skew == 0 {
		skew = 5 * time.Minute
	}
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > skew {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if err := Verify(h.Secret, r.Header.Get("X-MLflow-Delivery-Id"), ts, r.Header.Get("X-MLflow-Signature"), body); err != nil {
		if h.Logger != nil {
			h.Logger.Warn("mlflow webhook refused", "err", err)
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	select {
	case h.Trigger <- struct{}{}:
	default: // a sync is already due
	}
	w.WriteHeader(http.StatusNoContent)
}

// ListenWebhooks serves Webhook on addr until ctx ends or stop is called.
func ListenWebhooks(ctx context.Context, addr string, secret []byte, trigger chan<- struct{}, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: &Webhook{Secret: secret, Trigger: trigger, Logger: logger}, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return func() { srv.Close() }, nil
}
