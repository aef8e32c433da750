package main

import (
	"fmt"
	"io"
)

func cmdMLflow(args []string, stdout, stderr io.Writer) error {
	return fmt.Errorf("not yet")
}
