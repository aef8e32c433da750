//go:build unix

package mlflow_test

import (
	"os/exec"
	"syscall"
)

// sysProcAttr starts the server in its own process group, so that its workers stop with it.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
}
