package auth

import (
	"sync"
	"sync/atomic"
)

// Keyring is the token set in force. Requests read it without locking; a
// reload swaps in a whole new set at once, so a request sees either the old
// set or the new one, never a mix, and requests already admitted (waiters in
// a long-poll) are not disturbed.
type Keyring struct {
	path string
	set  atomic.Pointer[Set]
	// reload serializes reloads so that two SIGHUPs in a row cannot install
	// the older file's contents last.
	reload sync.Mutex
}

// NewKeyring returns a keyring holding set, with no file behind it (tests).
func NewKeyring(set *Set) *Keyring {
	k := &Keyring{}
	k.set.Store(set)
	return k
}

// OpenKeyring reads the tokens file at path; a malformed file is an error
// that names the line.
func OpenKeyring(path string) (*Keyring, error) {
	set, err := ParseFile(path)
	if err != nil {
		return nil, err
	}
	k := &Keyring{path: path}
	k.set.Store(set)
	return k, nil
}

// Path is the tokens file the keyring reloads from ("" for none).
func (k *Keyring) Path() string { return k.path }

// Set is the token set in force.
func (k *Keyring) Set() *Set { return k.set.Load() }

// Swap puts set in force.
func (k *Keyring) Swap(set *Set) {
	k.reload.Lock()
	defer k.reload.Unlock()
	k.set.Store(set)
}

// Reload reads the tokens file again and puts it in force. If the file
// cannot be read or is malformed, the old set stays in force and the error
// (naming the line) is returned; a typo must not lock everybody out.
func (k *Keyring) Reload() (*Set, error) {
	k.reload.Lock()
	defer k.reload.Unlock()
	set, err := ParseFile(k.path)
	if err != nil {
		return nil, err
	}
	k.set.Store(set)
	return set, nil
}
