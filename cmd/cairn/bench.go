package main

import (
	"errors"
	"io"
)

func cmdBench(args []string, stdout, stderr io.Writer) error {
	return errors.New("bench: being written")
}
