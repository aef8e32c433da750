// Package python_test runs the Python SDK's pytest suite against a `cairn serve` built from this repository, so
// that `go test ./...` covers the SDK too. It needs python3 with pytest (plus numpy and scikit-learn for the
// estimator test); without them it skips locally and fails under CI.
package python_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

func TestPythonSDK(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(py, "-c", "import pytest").Run()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3 with pytest is required under CI: %v", err)
		}
		t.Skipf("python3 with pytest not available: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "cairn")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gobin, "build", "-o", bin, "../../cmd/cairn").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
	cmd.Env = append(os.Environ(), "CAIRN_BIN="+bin)
	out, err := cmd.CombinedOutput()
	t.Logf("pytest:\n%s", out)
	if err != nil {
		t.Fatalf("pytest failed: %v", err)
	}
}
