// Command goverifier checks casetrail's checkpoints and proofs with Go's
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, code casetrail did not write.
//
// It reads JSON requests, one per line, on standard input and answers each with one line,
// "ok" or "fail: <reason>":
//
//	{"kind":"note","vkey":V,"note":N}      open note N with verifier key V; remember the
//	                                         checkpoint (origin, size, root) it signs
//	{"kind":"keys","keys":K}               take K, a keys file (a verifier key a line, then
//	                                         optionally " from=<N> at=<time>"), as the schedule
//	                                         of its log's keys for the notes that follow
//	{"kind":"note","note":N}               open note N with the key(s) of that schedule valid
//	                                         for the size it states (both at a handover size N:
//	                                         each must open it alone); remember it as above
//	{"kind":"record","size":S,"index":I,"leaf":H,"proof":[...]}
//	                                         tlog.CheckRecord against the remembered root of S
//	{"kind":"tree","old":M,"size":S,"proof":[...]}
//	                                         tlog.CheckTree between remembered sizes M and S
//
// Record and tree proofs are also checked with github.com/transparency-dev/merkle/proof
// (RFC 6962/9162 verification by another team); both must accept. Hashes are standard base64.
//
// With the argument "vectors" it prints, as JSON, the test vectors of
// github.com/transparency-dev/merkle/testonly: leaf inputs, the root of every prefix, the
// empty tree's root.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	Kind  string   `json:"kind"`
	Keys  string   `json:"keys"`
	Vkey  string   `json:"vkey"`
	Note  string   `json:"note"`
	Size  int64    `json:"size"`
	Old   int64    `json:"old"`
	Index int64    `json:"index"`
	Leaf  string   `json:"leaf"`
	Proof []string `json:"proof"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "vectors" {
		vectors := map[string]any{
			"leaf_inputs": testonly.LeafInputs(),
			"root_hashes": testonly.RootHashes(),
			"empty_root":  testonly.EmptyRootHash(),
		}
		if err := json.NewEncoder(os.Stdout).Encode(vectors); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	roots := map[int64]tlog.Hash{}
	var keys []scheduled
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var r request
		err := json.Unmarshal(in.Bytes(), &r)
		if err == nil {
			if r.Kind == "keys" {
				keys, err = parseKeys(r.Keys)
			} else {
				err = handle(r, roots, keys)
			}
		}
		if err != nil {
			fmt.Fprintf(out, "fail: %v\n", err)
		} else {
			fmt.Fprintln(out, "ok")
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func handle(r request, roots map[int64]tlog.Hash, keys []scheduled) error {
	switch r.Kind {
	case "note":
		if r.Vkey == "" {
			size, root, err := openScheduled(r.Note, keys)
			if err != nil {
				return err
			}
			roots[size] = root
			return nil
		}
		verifier, err := note.NewVerifier(r.Vkey)
		if err != nil {
			return err
		}
		opened, err := note.Open([]byte(r.Note), note.VerifierList(verifier))
		if err != nil {
			return err
		}
		size, root, err := parseCheckpoint(opened.Text, verifier.Name())
		if err != nil {
			return err
		}
		roots[size] = root
		return nil
	case "record":
		root, ok := roots[r.Size]
		if !ok {
			return fmt.Errorf("no verified checkpoint of size %d", r.Size)
		}
		leaf, err := hash(r.Leaf)
		if err != nil {
			return err
		}
		path, err := hashes(r.Proof)
		if err != nil {
			return err
		}
		if err := tlog.CheckRecord(tlog.RecordProof(path), r.Size, root, r.Index, leaf); err != nil {
			return err
		}
		return proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(r.Index), uint64(r.Size),
			leaf[:], raw(path), root[:])
	case "tree":
		root, ok := roots[r.Size]
		old, okOld := roots[r.Old]
		if !ok || !okOld {
			return fmt.Errorf("no verified checkpoints of sizes %d and %d", r.Old, r.Size)
		}
		path, err := hashes(r.Proof)
		if err != nil {
			return err
		}
		if err := tlog.CheckTree(tlog.TreeProof(path), r.Size, root, r.Old, old); err != nil {
			return err
		}
		return proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(r.Old), uint64(r.Size),
			raw(path), old[:], root[:])
	}
	return fmt.Errorf("unknown kind %q", r.Kind)
}

// scheduled is one key of a log's schedule: it signs the sizes from start up to end
// (inclusive; -1: no end), the next key's start.
type scheduled struct {
	verifier   note.Verifier
	start, end int64
}

// parseKeys reads a keys file as casetrail publishes it: keys in the order they signed.
func parseKeys(text string) ([]scheduled, error) {
	var keys []scheduled
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		verifier, err := note.NewVerifier(fields[0])
		if err != nil {
			return nil, err
		}
		key := scheduled{verifier, 0, -1}
		if len(fields) > 1 {
			if len(fields) != 3 || !strings.HasPrefix(fields[1], "from=") || !strings.HasPrefix(fields[2], "at=") {
				return nil, fmt.Errorf("bad range %q", line)
			}
			key.start, err = strconv.ParseInt(strings.TrimPrefix(fields[1], "from="), 10, 64)
			if err != nil {
				return nil, err
			}
		}
		if n := len(keys); n > 0 {
			if key.start <= keys[n-1].start {
				return nil, fmt.Errorf("ranges out of order at %q", line)
			}
			keys[n-1].end = key.start
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// openScheduled opens a checkpoint note with every key of the schedule whose range holds the
// size it states: one, or two at a handover size.
func openScheduled(text string, keys []scheduled) (int64, tlog.Hash, error) {
	body, _, found := strings.Cut(text, "\n\n")
	if !found || len(keys) == 0 {
		return 0, tlog.Hash{}, errors.New("no keys, or no note")
	}
	claimed, _, err := parseCheckpoint(body+"\n", keys[0].verifier.Name())
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	valid := 0
	var size int64
	var root tlog.Hash
	for _, key := range keys {
		if claimed < key.start || (key.end >= 0 && claimed > key.end) {
			continue
		}
		valid++
		opened, err := note.Open([]byte(text), note.VerifierList(key.verifier))
		if err != nil {
			return 0, tlog.Hash{}, fmt.Errorf("size %d, key %s: %w", claimed, key.verifier.Name(), err)
		}
		size, root, err = parseCheckpoint(opened.Text, key.verifier.Name())
		if err != nil {
			return 0, tlog.Hash{}, err
		}
	}
	if valid == 0 {
		return 0, tlog.Hash{}, fmt.Errorf("no key valid for size %d", claimed)
	}
	return size, root, nil
}

// parseCheckpoint reads a C2SP tlog-checkpoint body: origin, size, base64 root hash.
func parseCheckpoint(text, origin string) (int64, tlog.Hash, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return 0, tlog.Hash{}, errors.New("checkpoint has fewer than three lines")
	}
	if lines[0] != origin {
		return 0, tlog.Hash{}, fmt.Errorf("origin %q is not the key name %q", lines[0], origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return 0, tlog.Hash{}, fmt.Errorf("bad tree size %q", lines[1])
	}
	root, err := hash(lines[2])
	return size, root, err
}

func hash(text string) (tlog.Hash, error) {
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		return tlog.Hash{}, fmt.Errorf("bad hash %q", text)
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h, nil
}

func hashes(texts []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(texts))
	for i, text := range texts {
		h, err := hash(text)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

func raw(hashes []tlog.Hash) [][]byte {
	out := make([][]byte, len(hashes))
	for i := range hashes {
		out[i] = hashes[i][:]
	}
	return out
}
