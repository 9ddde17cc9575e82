package testcluster

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/atollstore/atoll/api"
)

func awsClient(c *Cluster, endpoint string, key api.AccessKey) *s3.Client {
	return s3.New(s3.Options{
		HTTPClient:   c.HTTPClient(),
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Region:       "us-east-1",
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key.AccessKey, SecretAccessKey: key.SecretKey}, nil
		}),
		RetryMaxAttempts: 1,
	})
}

// s3Code returns the S3 error code of err ("" if none).
func s3Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func startS3(t *testing.T) (*Cluster, api.AccessKey) {
	c := start(t, Options{})
	key, err := c.CreateAccessKey(context.Background(), api.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func getObject(t *testing.T, cl *s3.Client, bucket, key string) ([]byte, *s3.GetObjectOutput) {
	t.Helper()
	out, err := cl.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, out
}

// TestS3WithAWSSDK drives every supported operation with aws-sdk-go-v2.
func TestS3WithAWSSDK(t *testing.T) {
	c, key := startS3(t)
	ctx := context.Background()
	cl := awsClient(c, c.S3URLs()[0], key)
	other := awsClient(c, c.S3URLs()[4], key) // another node: reads are linearizable anywhere
	r := rand.New(rand.NewPCG(20, 20))
	bucket := aws.String("photos")

	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: bucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: bucket}); s3Code(err) != "BucketAlreadyOwnedByYou" {
		t.Fatalf("second create: %v", err)
	}
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("Bad_Name")}); s3Code(err) != "InvalidBucketName" {
		t.Fatalf("bad bucket name: %v", err)
	}
	if _, err := other.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: bucket}); err != nil {
		t.Fatalf("head bucket on another node: %v", err)
	}
	lb, err := cl.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil || len(lb.Buckets) != 1 || *lb.Buckets[0].Name != "photos" {
		t.Fatalf("list buckets: %+v %v", lb, err)
	}

	// Put and get, with metadata, from another node.
	data := randBytes(r, 3*chunk+123)
	put, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg"), Body: bytes.NewReader(data),
		ContentType: aws.String("image/jpeg"), Metadata: map[string]string{"owner": "ada"}})
	if err != nil {
		t.Fatal(err)
	}
	got, out := getObject(t, other, "photos", "dir/cat.jpg")
	if !bytes.Equal(got, data) || *out.ContentType != "image/jpeg" || out.Metadata["owner"] != "ada" || *out.ETag != *put.ETag || *out.ContentLength != int64(len(data)) {
		t.Fatalf("get: %d bytes, type %v, meta %v, etag %v (put %v)", len(got), *out.ContentType, out.Metadata, *out.ETag, *put.ETag)
	}
	if want := fmt.Sprintf(`"%x"`, md5.Sum(data)); *put.ETag != want {
		t.Fatalf("etag %s, want the MD5 %s", *put.ETag, want)
	}
	rg, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg"), Range: aws.String("bytes=100-199")})
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rg.Body)
	rg.Body.Close()
	if !bytes.Equal(part, data[100:200]) || *rg.ContentRange != fmt.Sprintf("bytes 100-199/%d", len(data)) {
		t.Fatalf("range: %d bytes, %s", len(part), *rg.ContentRange)
	}
	if _, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg"), Range: aws.String(fmt.Sprintf("bytes=%d-", len(data)))}); s3Code(err) != "InvalidRange" {
		t.Fatalf("range past the end: %v", err)
	}
	if _, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg"), IfNoneMatch: put.ETag}); !strings.Contains(fmt.Sprint(err), "304") {
		t.Fatalf("if-none-match: %v", err)
	}
	if _, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg"), IfMatch: aws.String(`"nope"`)}); s3Code(err) != "PreconditionFailed" {
		t.Fatalf("if-match: %v", err)
	}
	head, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg")})
	if err != nil || *head.ContentLength != int64(len(data)) || head.Metadata["owner"] != "ada" {
		t.Fatalf("head: %+v %v", head, err)
	}
	if _, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String("nope")}); s3Code(err) != "NoSuchKey" {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("nobucket"), Key: aws.String("x")}); s3Code(err) != "NoSuchBucket" {
		t.Fatalf("missing bucket: %v", err)
	}

	// Copy: a new object over the same chunks, metadata kept or replaced.
	if _, err := cl.CopyObject(ctx, &s3.CopyObjectInput{Bucket: bucket, Key: aws.String("copy.jpg"), CopySource: aws.String("photos/dir/cat.jpg")}); err != nil {
		t.Fatal(err)
	}
	if got, out := getObject(t, cl, "photos", "copy.jpg"); !bytes.Equal(got, data) || out.Metadata["owner"] != "ada" {
		t.Fatalf("copy: %d bytes, meta %v", len(got), out.Metadata)
	}
	if _, err := cl.CopyObject(ctx, &s3.CopyObjectInput{Bucket: bucket, Key: aws.String("copy.jpg"), CopySource: aws.String("photos/copy.jpg"),
		MetadataDirective: types.MetadataDirectiveReplace, Metadata: map[string]string{"owner": "bob"}}); err != nil {
		t.Fatal(err)
	}
	if _, out := getObject(t, cl, "photos", "copy.jpg"); out.Metadata["owner"] != "bob" {
		t.Fatalf("copy with REPLACE: meta %v", out.Metadata)
	}

	// Listing more than 1000 keys with a delimiter, page by page.
	var keys []string
	for i := range 1050 {
		keys = append(keys, fmt.Sprintf("many/%02d/%04d", i%7, i))
	}
	keys = append(keys, "many/top")
	parallel(t, 8, keys, func(k string) error {
		_, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: aws.String(k), Body: bytes.NewReader(nil)})
		return err
	})
	var listed []string
	p := s3.NewListObjectsV2Paginator(other, &s3.ListObjectsV2Input{Bucket: bucket, Prefix: aws.String("many/")})
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range page.Contents {
			listed = append(listed, *o.Key)
		}
	}
	slices.Sort(keys)
	if pages != 2 || !slices.Equal(listed, keys) {
		t.Fatalf("list v2: %d keys in %d pages, want %d in 2", len(listed), pages, len(keys))
	}
	d, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: bucket, Prefix: aws.String("many/"), Delimiter: aws.String("/")})
	if err != nil || len(d.CommonPrefixes) != 7 || len(d.Contents) != 1 || *d.Contents[0].Key != "many/top" || *d.CommonPrefixes[0].Prefix != "many/00/" {
		t.Fatalf("list with delimiter: %d prefixes, %d keys, %v", len(d.CommonPrefixes), len(d.Contents), err)
	}
	d2, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: bucket, Prefix: aws.String("many/"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(3)})
	if err != nil || len(d2.CommonPrefixes) != 3 || !*d2.IsTruncated {
		t.Fatalf("list with delimiter, 3 per page: %+v %v", d2, err)
	}
	d3, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: bucket, Prefix: aws.String("many/"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(100), ContinuationToken: d2.NextContinuationToken})
	if err != nil || len(d3.CommonPrefixes) != 4 || len(d3.Contents) != 1 || *d3.CommonPrefixes[0].Prefix != "many/03/" {
		t.Fatalf("list with delimiter, second page: %+v %v", d3, err)
	}
	if z, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: bucket, MaxKeys: aws.Int32(0)}); err != nil || len(z.Contents) != 0 || *z.IsTruncated {
		t.Fatalf("max-keys=0: %+v %v", z, err)
	}
	v1, err := cl.ListObjects(ctx, &s3.ListObjectsInput{Bucket: bucket, Prefix: aws.String("many/"), Marker: aws.String("many/06/1049"), MaxKeys: aws.Int32(5)})
	if err != nil || len(v1.Contents) != 1 || *v1.Contents[0].Key != "many/top" || *v1.IsTruncated {
		t.Fatalf("list v1 after a marker: %+v %v", v1.Contents, err)
	}
	if _, err := cl.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: bucket}); s3Code(err) != "BucketNotEmpty" {
		t.Fatalf("deleting a non-empty bucket: %v", err)
	}

	// Batch delete.
	var ids []types.ObjectIdentifier
	for _, k := range keys {
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
	}
	for i := 0; i < len(ids); i += 1000 {
		del, err := cl.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: bucket, Delete: &types.Delete{Objects: ids[i:min(i+1000, len(ids))]}})
		if err != nil || len(del.Errors) != 0 || len(del.Deleted) != min(1000, len(ids)-i) {
			t.Fatalf("delete objects: %d deleted, %v errors, %v", len(del.Deleted), del.Errors, err)
		}
	}
	if l, _ := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: bucket, Prefix: aws.String("many/")}); len(l.Contents) != 0 {
		t.Fatalf("%d keys left after the batch delete", len(l.Contents))
	}

	// Multipart, parts uploaded out of order and concurrently.
	big := randBytes(r, 12<<20+345)
	mp, err := cl.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: aws.String("big.bin"), ContentType: aws.String("application/x-big")})
	if err != nil {
		t.Fatal(err)
	}
	pieces := [][]byte{big[:5<<20], big[5<<20 : 10<<20], big[10<<20:]}
	etags := make([]*string, 3)
	var wg sync.WaitGroup
	for _, i := range []int{2, 0, 1} {
		wg.Go(func() {
			up, err := other.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: aws.String("big.bin"), UploadId: mp.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(pieces[i])})
			if err != nil {
				t.Error(err)
				return
			}
			etags[i] = up.ETag
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	lp, err := cl.ListParts(ctx, &s3.ListPartsInput{Bucket: bucket, Key: aws.String("big.bin"), UploadId: mp.UploadId})
	if err != nil || len(lp.Parts) != 3 || *lp.Parts[2].Size != int64(len(pieces[2])) {
		t.Fatalf("list parts: %+v %v", lp, err)
	}
	lu, err := cl.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: bucket})
	if err != nil || len(lu.Uploads) != 1 || *lu.Uploads[0].UploadId != *mp.UploadId {
		t.Fatalf("list uploads: %+v %v", lu, err)
	}
	completed := func(order ...int) *types.CompletedMultipartUpload {
		var cm types.CompletedMultipartUpload
		for _, i := range order {
			cm.Parts = append(cm.Parts, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: etags[i]})
		}
		return &cm
	}
	if _, err := cl.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: aws.String("big.bin"), UploadId: mp.UploadId, MultipartUpload: completed(1, 0, 2)}); s3Code(err) != "InvalidPartOrder" {
		t.Fatalf("complete out of order: %v", err)
	}
	never := completed(0, 1)
	never.Parts = append(never.Parts, types.CompletedPart{PartNumber: aws.Int32(4), ETag: etags[2]})
	wrong := completed(0, 1, 2)
	wrong.Parts[1].ETag = etags[0]
	for name, cm := range map[string]*types.CompletedMultipartUpload{"a part never uploaded": never, "a wrong ETag": wrong} {
		if _, err := cl.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: aws.String("big.bin"), UploadId: mp.UploadId, MultipartUpload: cm}); s3Code(err) != "InvalidPart" {
			t.Fatalf("complete with %s: %v", name, err)
		}
	}
	done, err := cl.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: aws.String("big.bin"), UploadId: mp.UploadId, MultipartUpload: completed(0, 1, 2)})
	if err != nil || !strings.HasSuffix(*done.ETag, `-3"`) {
		t.Fatalf("complete: %+v %v", done, err)
	}
	if got, out := getObject(t, other, "photos", "big.bin"); !bytes.Equal(got, big) || *out.ContentType != "application/x-big" || *out.ETag != *done.ETag {
		t.Fatalf("multipart object: %d bytes of %d, type %s", len(got), len(big), *out.ContentType)
	}
	// An aborted upload leaves nothing: the bucket can be emptied and deleted.
	ab, err := cl.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: aws.String("gone.bin")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: aws.String("gone.bin"), UploadId: ab.UploadId, PartNumber: aws.Int32(1), Body: bytes.NewReader(randBytes(r, 1000))}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: aws.String("gone.bin"), UploadId: ab.UploadId}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: aws.String("gone.bin"), UploadId: ab.UploadId, PartNumber: aws.Int32(2), Body: bytes.NewReader(nil)}); s3Code(err) != "NoSuchUpload" {
		t.Fatalf("part for an aborted upload: %v", err)
	}

	// Presigned GET and PUT work with a plain HTTP client; tampering fails.
	ps := s3.NewPresignClient(cl)
	pget, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String("dir/cat.jpg")}, s3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := send(t, c, http.MethodGet, pget.URL, nil); code != 200 || body != string(data) {
		t.Fatalf("presigned get: %d, %d bytes", code, len(body))
	}
	if code, body := send(t, c, http.MethodGet, strings.Replace(pget.URL, "cat.jpg", "copy.jpg", 1), nil); code != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Fatalf("presigned get of another key: %d %s", code, body)
	}
	pput, err := ps.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: aws.String("uploaded.txt")}, s3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := send(t, c, http.MethodPut, pput.URL, []byte("via a presigned URL")); code != 200 {
		t.Fatalf("presigned put: %d %s", code, body)
	}
	if got, _ := getObject(t, cl, "photos", "uploaded.txt"); string(got) != "via a presigned URL" {
		t.Fatalf("presigned put stored %q", got)
	}

	// Wrong secret, unknown key, anonymous: refused, and nothing stored.
	bad := awsClient(c, c.S3URLs()[0], api.AccessKey{AccessKey: key.AccessKey, SecretKey: "wrong" + key.SecretKey[5:]})
	if _, err := bad.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: aws.String("evil"), Body: bytes.NewReader([]byte("x"))}); s3Code(err) != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	unknown := awsClient(c, c.S3URLs()[0], api.AccessKey{AccessKey: "AKNOTAKEY", SecretKey: key.SecretKey})
	if _, err := unknown.ListBuckets(ctx, &s3.ListBucketsInput{}); s3Code(err) != "InvalidAccessKeyId" {
		t.Fatalf("unknown key: %v", err)
	}
	if code, body := send(t, c, http.MethodGet, c.S3URLs()[0]+"/photos/dir/cat.jpg", nil); code != 403 || !strings.Contains(body, "AccessDenied") {
		t.Fatalf("anonymous get: %d %s", code, body)
	}
	if code, _ := send(t, c, http.MethodPut, c.S3URLs()[0]+"/photos/evil", []byte("x")); code != 403 {
		t.Fatalf("anonymous put: %d", code)
	}
	if _, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: bucket, Key: aws.String("evil")}); err == nil {
		t.Fatal("a refused put stored an object")
	}

	// A public bucket serves anonymous reads, and only reads.
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("public"), ACL: types.BucketCannedACLPublicRead}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("public"), Key: aws.String("hello.txt"), Body: strings.NewReader("hello, world")}); err != nil {
		t.Fatal(err)
	}
	if code, body := send(t, c, http.MethodGet, c.S3URLs()[2]+"/public/hello.txt", nil); code != 200 || body != "hello, world" {
		t.Fatalf("anonymous get from a public bucket: %d %q", code, body)
	}
	if code, _ := send(t, c, http.MethodPut, c.S3URLs()[2]+"/public/evil", []byte("x")); code != 403 {
		t.Fatalf("anonymous put into a public bucket: %d", code)
	}
	if code, _ := send(t, c, http.MethodGet, c.S3URLs()[2]+"/", nil); code != 403 {
		t.Fatalf("anonymous list of buckets: %d", code)
	}

	// Empty the bucket and delete it.
	for _, k := range []string{"dir/cat.jpg", "copy.jpg", "big.bin", "uploaded.txt"} {
		if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: bucket}); err != nil {
		t.Fatalf("deleting the emptied bucket: %v", err)
	}
}

// TestS3WithMinio uses minio-go, whose uploads are aws-chunked with
// per-chunk signatures, and survives the loss of a region.
func TestS3WithMinio(t *testing.T) {
	c, key := startS3(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(21, 21))
	dial := func(endpoint string) *minio.Client {
		mc, err := minio.New(strings.TrimPrefix(endpoint, "https://"), &minio.Options{Creds: miniocreds.NewStaticV4(key.AccessKey, key.SecretKey, ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
			Secure: true, Transport: c.HTTPClient().Transport})
		if err != nil {
			t.Fatal(err)
		}
		return mc
	}
	mc := dial(c.S3URLs()[0])
	if err := mc.MakeBucket(ctx, "docs", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	for i, size := range []int{0, 1, chunk, 3*chunk + 7, 6 << 20} { // the last one goes multipart
		k := fmt.Sprintf("f%d", i)
		blobs[k] = randBytes(r, size)
		if _, err := mc.PutObject(ctx, "docs", k, bytes.NewReader(blobs[k]), int64(size), minio.PutObjectOptions{PartSize: 5 << 20}); err != nil {
			t.Fatalf("minio put %s: %v", k, err)
		}
	}
	// Unknown size: streamed as multipart.
	blobs["stream"] = randBytes(r, 7<<20)
	if _, err := mc.PutObject(ctx, "docs", "stream", io.NopCloser(bytes.NewReader(blobs["stream"])), -1, minio.PutObjectOptions{PartSize: 5 << 20}); err != nil {
		t.Fatalf("minio put of unknown size: %v", err)
	}
	check := func(mc *minio.Client) {
		t.Helper()
		for k, want := range blobs {
			o, err := mc.GetObject(ctx, "docs", k, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(o)
			o.Close()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("minio get %s: %d bytes of %d, %v", k, len(got), len(want), err)
			}
		}
		var n int
		for o := range mc.ListObjects(ctx, "docs", minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			n++
		}
		if n != len(blobs) {
			t.Fatalf("minio list: %d objects, want %d", n, len(blobs))
		}
	}
	check(mc)

	// A whole region lost: GET, PUT and LIST keep working through the others.
	dead := c.Regions()[0]
	c.KillRegion(dead)
	var alive string
	for _, m := range c.Members() {
		if m.Node != nil {
			alive = m.S3
			break
		}
	}
	mc = dial(alive)
	blobs["during-outage"] = randBytes(r, 2*chunk)
	if _, err := mc.PutObject(ctx, "docs", "during-outage", bytes.NewReader(blobs["during-outage"]), int64(2*chunk), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put with a region down: %v", err)
	}
	check(mc)
	if err := mc.RemoveObject(ctx, "docs", "f1", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.StatObject(ctx, "docs", "f1", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("stat after remove: %v", err)
	}
}

// parallel runs fn over items with n workers and fails the test on the
// first error.
func parallel[T any](t *testing.T, n int, items []T, fn func(T) error) {
	t.Helper()
	work := make(chan T)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for it := range work {
				if err := fn(it); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for _, it := range items {
		select {
		case work <- it:
		case err := <-errs:
			close(work)
			wg.Wait()
			t.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// TestS3VirtualHosted: with a domain set, bucket.domain addresses the
// bucket (the SDK's default addressing); path-style keeps working.
func TestS3VirtualHosted(t *testing.T) {
	c := start(t, Options{S3Domain: "s3.atoll.test"})
	key, err := c.CreateAccessKey(context.Background(), api.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	endpoint := c.S3URLs()[0]
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(endpoint, "https://"))
	// Every *.s3.atoll.test name reaches the node, as a wildcard DNS record
	// would (and the node's certificate is checked against its IP).
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) { return c.Dial(ctx, endpoint) }
	var hosts []string
	var mu sync.Mutex
	vh := s3.New(s3.Options{
		BaseEndpoint: aws.String("https://s3.atoll.test:" + port), Region: "us-east-1",
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key.AccessKey, SecretAccessKey: key.SecretKey}, nil
		}),
		HTTPClient: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			hosts = append(hosts, r.URL.Host)
			mu.Unlock()
			return (&http.Transport{DialTLSContext: dial}).RoundTrip(r)
		})},
	})
	if _, err := vh.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("vhost")}); err != nil {
		t.Fatal(err)
	}
	if _, err := vh.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("vhost"), Key: aws.String("a/b.txt"), Body: strings.NewReader("virtual")}); err != nil {
		t.Fatal(err)
	}
	if got, _ := getObject(t, vh, "vhost", "a/b.txt"); string(got) != "virtual" {
		t.Fatalf("virtual-hosted get: %q", got)
	}
	if got, _ := getObject(t, awsClient(c, endpoint, key), "vhost", "a/b.txt"); string(got) != "virtual" {
		t.Fatalf("path-style get of the same object: %q", got)
	}
	l, err := vh.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("vhost")})
	if err != nil || len(l.Contents) != 1 || *l.Contents[0].Key != "a/b.txt" {
		t.Fatalf("virtual-hosted list: %+v %v", l, err)
	}
	if !slices.Contains(hosts, "vhost.s3.atoll.test:"+port) {
		t.Fatalf("the SDK did not use virtual-hosted addressing: hosts %v", hosts)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestS3ReadsAreLinearizable: a gateway reads an object from its own
// replica while the leader confirms it, so a gateway that cannot hear the
// leader never serves a key's old content or a deleted key (it fails
// instead), and once it hears again it serves the latest.
func TestS3ReadsAreLinearizable(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 2, K: 3, M: 2})
	ctx := context.Background()
	key, err := c.CreateAccessKey(ctx, api.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	leader, gateway, lagging := leaderAndTwo(t, c)
	g, l := awsClient(c, gateway.S3, key), awsClient(c, lagging.S3, key)
	bucket, name, gone := "lin", "k", "gone"
	if _, err := g.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	put := func(k, v string) {
		t.Helper()
		if _, err := g.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &k, Body: strings.NewReader(v)}); err != nil {
			t.Fatal(err)
		}
	}
	put(name, "old")
	put(gone, "doomed")
	for _, k := range []string{name, gone} { // the lagging replica has both
		if err := c.waitFor(ctx, "the lagging gateway to read "+k, func() bool {
			_, err := l.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &k})
			return err == nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	lagging.Net.Block(leader.IP)
	leader.Net.Block(lagging.IP)
	put(name, "new")
	if _, err := g.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &gone}); err != nil {
		t.Fatal(err)
	}
	read := func(k string) (string, error) {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		out, err := l.GetObject(sctx, &s3.GetObjectInput{Bucket: &bucket, Key: &k})
		if err != nil {
			return "", err
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		return string(b), err
	}
	if v, err := read(name); err == nil && v != "new" {
		t.Fatalf("a gateway cut from the leader served %q", v)
	}
	if v, err := read(gone); err == nil {
		t.Fatalf("a gateway cut from the leader served a deleted key: %q", v)
	}
	lagging.Net.Heal()
	leader.Net.Heal()
	if err := c.waitFor(ctx, "the lagging gateway to serve the latest", func() bool {
		v, err := read(name)
		if err == nil && v != "new" {
			t.Fatalf("served %q after the overwrite", v)
		}
		_, gerr := read(gone)
		return v == "new" && s3Code(gerr) == "NoSuchKey"
	}); err != nil {
		t.Fatal(err)
	}
}
