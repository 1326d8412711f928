//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// devCred is the user and group a process runs as.
type devCred = syscall.Credential

// pgProcAttr runs PostgreSQL's programs as cred (nil: as this process), in
// a process group of their own: Ctrl-C reaches kagzi, which stops the
// server after the API, rather than the server at once.
func pgProcAttr(cred *devCred) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// unprivilegedUser is the postgres user the PostgreSQL packages create, or
// else nobody.
func unprivilegedUser() (devUser, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return devUser{name: name, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
	}
	return devUser{}, errors.New("kagzi dev runs as root, and PostgreSQL refuses to: it needs an unprivileged user postgres or nobody to run it as, and found neither (or run kagzi dev as yourself)")
}

// reachable checks that the user uid may enter every existing folder on
// the way to dir.
func reachable(dir string, uid uint32) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			st, ok := fi.Sys().(*syscall.Stat_t)
			mode := fi.Mode().Perm()
			if !(mode&0o001 != 0 || ok && st.Uid == uid && mode&0o100 != 0) {
				return fmt.Errorf("cannot enter %s (mode %v), on the way to %s", p, mode, dir)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
