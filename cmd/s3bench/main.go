// Command s3bench measures PUT and GET throughput and operations per
// second of any S3 endpoint (Atoll's or another store's) for several
// object sizes and concurrencies, and prints a Markdown table.
//
//	s3bench --endpoint http://127.0.0.1:8900 --access-key AK... --secret-key ...
//
// Every object it writes has unique content, so a deduplicating store
// cannot skip the work; it removes its objects and bucket at the end.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// config is one benchmark run.
type config struct {
	Endpoint, AccessKey, SecretKey, Region, Bucket string
	CAFile                                         string // PEM bundle to trust for an https endpoint (default: the system's)
	Sizes                                          []int64
	Concurrency                                    []int
	Duration                                       time.Duration // per size, concurrency and operation
}

// result is one row of the table.
type result struct {
	Op          string
	Size        int64
	Concurrency int
	Ops         int
	Elapsed     time.Duration
}

func (r result) opsPerSec() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }
func (r result) mbPerSec() float64 {
	return float64(r.Ops) * float64(r.Size) / 1e6 / r.Elapsed.Seconds()
}

func main() {
	var c config
	var sizes, conc string
	flag.StringVar(&c.Endpoint, "endpoint", "http://127.0.0.1:8900", "S3 endpoint URL")
	flag.StringVar(&c.AccessKey, "access-key", os.Getenv("AWS_ACCESS_KEY_ID"), "access key (default $AWS_ACCESS_KEY_ID)")
	flag.StringVar(&c.SecretKey, "secret-key", os.Getenv("AWS_SECRET_ACCESS_KEY"), "secret key (default $AWS_SECRET_ACCESS_KEY)")
	flag.StringVar(&c.Region, "region", "us-east-1", "signing region")
	flag.StringVar(&c.CAFile, "ca", "", "PEM file of the CA that signed the endpoint's certificate (an Atoll cluster's ca.crt)")
	flag.StringVar(&c.Bucket, "bucket", "s3bench-"+strconv.FormatInt(time.Now().Unix(), 36), "bucket to create, use and remove")
	flag.StringVar(&sizes, "sizes", "4KiB,1MiB,64MiB", "object sizes")
	flag.StringVar(&conc, "concurrency", "1,8", "requests in flight")
	flag.DurationVar(&c.Duration, "duration", 10*time.Second, "time spent on each size, concurrency and operation")
	flag.Parse()
	var err error
	if c.Sizes, err = parseSizes(sizes); err == nil {
		c.Concurrency, err = parseInts(conc)
	}
	if err == nil {
		var rs []result
		if rs, err = run(context.Background(), c, os.Stderr); err == nil {
			printTable(os.Stdout, c, rs)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3bench:", err)
		os.Exit(1)
	}
}

func newClient(c config) (*s3.Client, error) {
	hc := awshttp.NewBuildableClient()
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", c.CAFile)
		}
		hc = hc.WithTransportOptions(func(tr *http.Transport) {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{}
			}
			tr.TLSClientConfig.RootCAs = pool
		})
	}
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(c.Endpoint), UsePathStyle: true, Region: c.Region, HTTPClient: hc,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: c.AccessKey, SecretAccessKey: c.SecretKey}, nil
		}),
	}), nil
}

// run measures every size and concurrency: PUTs of new objects for the
// duration, then GETs of the objects written.
func run(ctx context.Context, c config, progress io.Writer) ([]result, error) {
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &c.Bucket}); err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", c.Bucket, err)
	}
	var keys []string
	defer cleanup(cl, c.Bucket, &keys)
	var out []result
	for _, size := range c.Sizes {
		payload := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(size)}).Read(payload)
		for _, n := range c.Concurrency {
			var stamp atomic.Uint64
			var mu sync.Mutex
			var written []string
			put := measure(ctx, "PUT", size, n, c.Duration, func(ctx context.Context) error {
				s := stamp.Add(1)
				key := fmt.Sprintf("%d/%d/%d", size, n, s)
				body := slices.Clone(payload)
				for off := 0; off+8 <= len(body); off += 1 << 20 {
					binary.LittleEndian.PutUint64(body[off:], s) // unique content: nothing to deduplicate
				}
				if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: &c.Bucket, Key: &key, Body: bytes.NewReader(body)}); err != nil {
					return err
				}
				mu.Lock()
				written = append(written, key)
				mu.Unlock()
				return nil
			})
			keys = append(keys, written...)
			if put.err != nil {
				return out, put.err
			}
			var next atomic.Uint64
			get := measure(ctx, "GET", size, n, c.Duration, func(ctx context.Context) error {
				key := written[next.Add(1)%uint64(len(written))]
				o, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: &c.Bucket, Key: &key})
				if err != nil {
					return err
				}
				defer o.Body.Close()
				got, err := io.Copy(io.Discard, o.Body)
				if err == nil && got != size {
					err = fmt.Errorf("GET %s: %d bytes, want %d", key, got, size)
				}
				return err
			})
			if get.err != nil {
				return out, get.err
			}
			for _, r := range []result{put.result, get.result} {
				fmt.Fprintf(progress, "%s %s x%d: %d ops, %.1f ops/s, %.1f MB/s\n", r.Op, human(r.Size), r.Concurrency, r.Ops, r.opsPerSec(), r.mbPerSec())
				out = append(out, r)
			}
		}
	}
	return out, nil
}

type measured struct {
	result
	err error
}

// measure runs op from n workers until the duration has passed (and at
// least once per worker).
func measure(ctx context.Context, name string, size int64, n int, d time.Duration, op func(context.Context) error) measured {
	var ops atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for first := true; first || time.Now().Before(deadline); first = false {
				if err := op(ctx); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("%s of %s: %w", name, human(size), err) })
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	return measured{result{Op: name, Size: size, Concurrency: n, Ops: int(ops.Load()), Elapsed: time.Since(start)}, firstErr}
}

// cleanup deletes what the run wrote, 1000 keys per request.
func cleanup(cl *s3.Client, bucket string, keys *[]string) {
	ctx := context.Background()
	for ks := *keys; len(ks) > 0; {
		part := ks[:min(1000, len(ks))]
		ks = ks[len(part):]
		var ids []types.ObjectIdentifier
		for _, k := range part {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
		}
		cl.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
	}
	cl.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
}

func printTable(w io.Writer, c config, rs []result) {
	fmt.Fprintf(w, "| op | size | concurrency | ops/s | MB/s |\n|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %d | %.1f | %.1f |\n", r.Op, human(r.Size), r.Concurrency, r.opsPerSec(), r.mbPerSec())
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func parseSizes(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := int64(1)
		for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
			if num, ok := strings.CutSuffix(f, suffix); ok {
				f, mult = num, m
			}
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, errors.New("bad concurrency " + f)
		}
		out = append(out, n)
	}
	return out, nil
}
