//go:build !unix

package main

import (
	"errors"
	"syscall"
)

// devCred is unused where there is no root (os.Geteuid is -1).
type devCred struct{ Uid, Gid uint32 }

func pgProcAttr(*devCred) *syscall.SysProcAttr { return nil }

func unprivilegedUser() (devUser, error) {
	return devUser{}, errors.New("kagzi dev runs PostgreSQL as another user only on Unix")
}

func reachable(string, uint32) error { return nil }
