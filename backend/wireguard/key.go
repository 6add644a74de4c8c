package wireguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// KeyFileEnv names the environment variable that sets the private key file, as upstream.
const KeyFileEnv = "WIREGUARD_KEY_FILE"

// DefaultKeyFile is wgkey beside the subnet file: upstream's fixed path by default.
func DefaultKeyFile(subnetFile string) string {
	return filepath.Join(filepath.Dir(subnetFile), "wgkey")
}

// KeyFile is $WIREGUARD_KEY_FILE when not empty, else DefaultKeyFile.
func KeyFile(subnetFile string, lookupEnv func(string) (string, bool)) string {
	if v, ok := lookupEnv(KeyFileEnv); ok && v != "" {
		return v
	}
	return DefaultKeyFile(subnetFile)
}

const keyFileMode = 0o400 // as upstream's

// fileStamp identifies a version of a file, changed by a rewrite or rename; zero: absent.
type fileStamp struct {
	ino, dev uint64
	size     int64
	mtime    time.Time
	ctime    syscall.Timespec
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.dev, st.ctime = s.Ino, uint64(s.Dev), s.Ctim
	}
	return st
}

var errKeyFileMissing = errors.New("key file does not exist")

// readKey reads a regular key file only its owner may access; messages never contain the key.
func readKey(path string) (wgtypes.Key, fileStamp, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, fileStamp{}, errKeyFileMissing
	}
	if err != nil {
		return wgtypes.Key{}, fileStamp{}, fmt.Errorf("could not read key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return wgtypes.Key{}, fileStamp{}, fmt.Errorf("key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return wgtypes.Key{}, fileStamp{}, fmt.Errorf("key file %s has mode %04o: its group or others may read or change the private key; "+
			"make it readable by its owner only (chmod 0400 %s) and restart flanneld, or replace the key if it may have leaked", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, fileStamp{}, fmt.Errorf("could not read key file: %w", err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		// wgtypes says only where the base64 breaks or the length, never the content
		return wgtypes.Key{}, fileStamp{}, fmt.Errorf("could not parse private key from file %s: %w", path, err)
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, fileStamp{}, fmt.Errorf("could not parse private key from file %s: the key is all zeros", path)
	}
	return k, stampOf(fi), nil
}

// loadOrCreateKey reads the key file or, when missing, writes a new key.
func loadOrCreateKey(path string) (key wgtypes.Key, st fileStamp, created bool, err error) {
	key, st, err = readKey(path)
	if !errors.Is(err, errKeyFileMissing) {
		return key, st, false, err
	}
	key, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fileStamp{}, false, fmt.Errorf("could not generate private key: %w", err)
	}
	if err := writeNewKeyFile(path, key); err != nil {
		if errors.Is(err, os.ErrExist) {
			// someone wrote one meanwhile: theirs counts
			key, st, err = readKey(path)
			return key, st, false, err
		}
		return wgtypes.Key{}, fileStamp{}, false, fmt.Errorf("could not write key file: %w", err)
	}
	key, st, err = readKey(path)
	return key, st, err == nil, err
}

// writeNewKeyFile writes the key (base64, no newline, as upstream) and links it to path, so a
// reader never sees half a key and an existing file is kept (os.ErrExist).
func writeNewKeyFile(path string, key wgtypes.Key) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(key.String())
	if err == nil {
		err = f.Chmod(keyFileMode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Link(tmp, path)
}
