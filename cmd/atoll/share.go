package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/e2e"
)

// shareFile encrypts a regular file on this machine, uploads the sealed
// form and prints a share link (the key only in its fragment).
func shareFile(ctx context.Context, cl *client.Client, f *os.File, size int64, name string, expires time.Duration, domainKeyFile string, quiet bool) error {
	dk, err := domainKey(domainKeyFile)
	if err != nil {
		return err
	}
	opts := client.ShareOptions{Name: name, Type: mime.TypeByExtension(filepath.Ext(name)), DomainKey: &dk}
	if expires > 0 {
		opts.Expires = time.Now().Add(expires)
	}
	bar := newProgress(e2e.SealedSize(size), "put --encrypt", quiet)
	opts.Upload = &client.UploadOptions{Progress: func(p client.UploadProgress) { bar.set(p.Sent + p.Skipped) }}
	link, err := cl.Share(ctx, f, size, opts)
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Println(link)
	return nil
}

// domainKey reads the key domain's key from path, making a new random one
// there (mode 0600) the first time. Files put with one domain key are
// stored once however often they are put; no one without it can tell
// what they are.
func domainKey(path string) (e2e.Key, error) {
	if path == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return e2e.Key{}, fmt.Errorf("no --domain-key and no configuration directory: %w", err)
		}
		path = filepath.Join(dir, "atoll", "domain.key")
	}
	var k e2e.Key
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k = e2e.NewKey()
		text, _ := k.MarshalText()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return k, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return k, err
		}
		_, werr := f.Write(append(text, '\n'))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return k, err
		}
		fmt.Fprintf(os.Stderr, "atoll: made a new domain key in %s (keep it: it is how your encrypted puts deduplicate)\n", path)
		return k, nil
	}
	if err != nil {
		return k, err
	}
	if err := k.UnmarshalText([]byte(strings.TrimSpace(string(b)))); err != nil {
		return k, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// getLink downloads a share link, decrypting it here. The file appears
// under its name (or -o) only once every byte is authenticated; -o -
// streams to stdout and fails at the end if anything was wrong.
func getLink(ctx context.Context, cn conn, raw, out string, quiet bool) error {
	link, err := e2e.ParseLink(raw)
	if err != nil {
		return usagef("%v", err)
	}
	*cn.server = link.Base
	cl, err := cn.open()
	if err != nil {
		return err
	}
	env, rc, err := cl.OpenLink(ctx, link)
	if err != nil {
		return err
	}
	defer rc.Close()
	if out == "" {
		if out = safeName(env.Name); out == "" {
			return fmt.Errorf("the link's file name %q is not usable here: give -o FILE", env.Name)
		}
		if _, err := os.Lstat(out); err == nil {
			return fmt.Errorf("%s exists: give -o FILE to overwrite it", out)
		}
	}
	bar := newProgress(env.Size, "get", quiet)
	defer bar.finish()
	if out == "-" {
		_, err := io.Copy(io.MultiWriter(os.Stdout, bar), rc)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // NB: fails harmlessly after the rename
	_, err = io.Copy(io.MultiWriter(tmp, bar), rc)
	if err = errors.Join(err, tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "%s: %d bytes, decrypted and verified\n", out, env.Size)
	}
	return nil
}

// safeName is a link's file name reduced to a plain name in the current
// directory, or "" if nothing usable is left.
func safeName(name string) string {
	name = filepath.Base(filepath.Clean("/" + strings.ReplaceAll(name, "\\", "/")))
	if name == "/" || name == "." || name == ".." || strings.HasPrefix(name, ".") || strings.ContainsAny(name, "\x00\n\r") {
		return ""
	}
	return name
}

func cmdLink(args []string) error {
	if len(args) == 0 || args[0] != "rm" {
		return usagef("want: atoll link rm LINK|ID")
	}
	fs := flag.NewFlagSet("link rm", flag.ContinueOnError)
	cn := connFlags(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one LINK or link ID")
	}
	id := pos[0]
	if l, err := e2e.ParseLink(id); err == nil {
		id, *cn.server = l.ID, l.Base
	} else if strings.Contains(id, "/") {
		return usagef("%v", err)
	}
	cl, err := cn.open()
	if err != nil {
		return err
	}
	return cl.DeleteLink(context.Background(), id)
}
