package s3

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/atollstore/atoll/raftstore"
)

// Multipart uploads: each part is stored as chunks when it arrives and
// holds them; completion makes an object of the parts' chunks without
// copying a byte.

const (
	maxParts    = 10000
	minPartSize = 5 << 20 // every part but the last
)

func (r *request) upload() raftstore.UploadRef {
	return raftstore.UploadRef{Bucket: r.bucket, Key: r.key, ID: r.URL.Query().Get("uploadId")}
}

func (s *Server) createUpload(w http.ResponseWriter, r *request) *Error {
	if err := checkKey(r.key); err != nil {
		return err
	}
	id := make([]byte, 16)
	rand.Read(id)
	ct, meta := objectMeta(r.Header)
	u := raftstore.Upload{ID: hex.EncodeToString(id), Bucket: r.bucket, Key: r.key, Created: time.Now().UTC(), ContentType: ct, Meta: meta}
	if err := s.apply(r, raftstore.CreateUploadCommand(u), errNoSuchBucket); err != nil {
		return err
	}
	writeXML(w, http.StatusOK, struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Xmlns    string   `xml:"xmlns,attr"`
		Bucket   string   `xml:"Bucket"`
		Key      string   `xml:"Key"`
		UploadID string   `xml:"UploadId"`
	}{Xmlns: xmlns, Bucket: r.bucket, Key: r.key, UploadID: u.ID})
	return nil
}

// checkUpload confirms the request's upload exists (linearizably).
func (s *Server) checkUpload(r *request) *Error {
	if err := s.node.Sync(r.Context()); err != nil {
		return toS3(err, errNoSuchUpload)
	}
	if _, err := s.node.Meta().Bucket(r.bucket); err != nil {
		return toS3(err, errNoSuchBucket)
	}
	if _, err := s.node.Meta().Upload(r.upload()); err != nil {
		return toS3(err, errNoSuchUpload)
	}
	return nil
}

func (s *Server) uploadPart(w http.ResponseWriter, r *request) *Error {
	num, err := strconv.Atoi(r.URL.Query().Get("partNumber"))
	if err != nil || num < 1 || num > maxParts {
		return errorf(http.StatusBadRequest, "InvalidArgument", "Part number must be an integer between 1 and %d, inclusive", maxParts)
	}
	if r.Header.Get("X-Amz-Copy-Source") != "" {
		return errorf(http.StatusNotImplemented, "NotImplemented", "UploadPartCopy is not supported")
	}
	if r.ContentLength > MaxObjectSize {
		return errEntityTooLarge
	}
	if err := s.checkUpload(r); err != nil {
		return err
	}
	rec, sum, serr := s.store(r, r.body, MaxObjectSize)
	if serr != nil {
		return serr
	}
	p := raftstore.Part{Number: num, Size: rec.Size, ETag: `"` + hex.EncodeToString(sum) + `"`, K: rec.K, M: rec.M, Chunks: rec.Chunks, Segments: rec.Segments, Modified: time.Now().UTC()}
	if err := s.apply(r, raftstore.PutPartCommand(r.upload(), p), errNoSuchUpload); err != nil {
		return err
	}
	w.Header().Set("ETag", p.ETag)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) completeUpload(w http.ResponseWriter, r *request) *Error {
	var in struct {
		Parts []struct {
			Number int    `xml:"PartNumber"`
			ETag   string `xml:"ETag"`
		} `xml:"Part"`
	}
	if err := decodeXML(r.body, &in, 4<<20); err != nil {
		return err
	}
	if len(in.Parts) == 0 || len(in.Parts) > maxParts {
		return errMalformedXML
	}
	if err := s.checkUpload(r); err != nil {
		return err
	}
	up := r.upload()
	u, err := s.node.Meta().Upload(up)
	if err != nil {
		return toS3(err, errNoSuchUpload)
	}
	for i := 1; i < len(in.Parts); i++ {
		if in.Parts[i].Number <= in.Parts[i-1].Number {
			return errInvalidPartOrder
		}
	}
	// The parts named, in order, merged with the stored ones (in number
	// order too): one part in memory at a time, however many there are.
	eachNamed := func(fn func(i int, p raftstore.Part) *Error) *Error {
		i := 0
		var ferr *Error
		err := s.node.Meta().EachPart(up, func(p raftstore.Part) bool {
			switch {
			case i == len(in.Parts):
				return false
			case p.Number < in.Parts[i].Number:
				return true // uploaded, not named
			case p.Number > in.Parts[i].Number:
				ferr = errInvalidPart // named, never uploaded
				return false
			}
			ferr = fn(i, p)
			i++
			return ferr == nil
		})
		switch {
		case err != nil:
			return toS3(err, errNoSuchUpload)
		case ferr == nil && i < len(in.Parts):
			return errInvalidPart
		}
		return ferr
	}
	o := raftstore.Object{Bucket: r.bucket, Key: r.key, ContentType: u.ContentType, Meta: u.Meta, Modified: time.Now().UTC()}
	etags := md5.New()
	check := func(i int, p raftstore.Part) *Error {
		if !etagMatches(in.Parts[i].ETag, p.ETag) {
			return errInvalidPart
		}
		if p.Size < minPartSize && i < len(in.Parts)-1 {
			return errEntityTooSmall
		}
		sum, _ := hex.DecodeString(strings.Trim(p.ETag, `"`))
		etags.Write(sum)
		o.K, o.M, o.Size = p.K, p.M, o.Size+p.Size
		return nil
	}
	if err := eachNamed(check); err != nil {
		return err
	}
	list := s.node.NewChunkList("")
	relist := func(i int, p raftstore.Part) *Error {
		if !etagMatches(in.Parts[i].ETag, p.ETag) {
			return errInvalidPart // replaced since it was checked
		}
		for i := range p.Chunks {
			p.Chunks[i].Reused = true // the part holds it until the commit
		}
		if err := list.Add(r.Context(), p.Chunks...); err != nil {
			return toS3(err, errInternal)
		}
		if err := list.AddSegments(r.Context(), p.Segments...); err != nil {
			return toS3(err, errInternal)
		}
		return nil
	}
	if err := eachNamed(relist); err != nil {
		return err
	}
	if o.Chunks, o.Segments, err = list.Done(r.Context()); err != nil {
		return toS3(err, errInternal)
	}
	o.ETag = fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(etags.Sum(nil)), len(in.Parts))
	if err := s.apply(r, raftstore.CompleteUploadCommand(raftstore.CompleteUpload{UploadRef: up, Object: o}), errNoSuchUpload); err != nil {
		return err
	}
	writeXML(w, http.StatusOK, struct {
		XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
		Xmlns    string   `xml:"xmlns,attr"`
		Location string   `xml:"Location"`
		Bucket   string   `xml:"Bucket"`
		Key      string   `xml:"Key"`
		ETag     string   `xml:"ETag"`
	}{Xmlns: xmlns, Location: "/" + r.bucket + "/" + r.key, Bucket: r.bucket, Key: r.key, ETag: o.ETag})
	return nil
}

func (s *Server) abortUpload(w http.ResponseWriter, r *request) *Error {
	cmd := raftstore.ReleaseUploadCommand(r.upload()) // the parts go afterwards, so an abort of any size fits a command
	if !s.node.CanPropose(cmd) {
		cmd = raftstore.AbortUploadCommand(r.upload()) // an upgrade in progress
	}
	if err := s.apply(r, cmd, errNoSuchUpload); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listParts(w http.ResponseWriter, r *request) *Error {
	if err := s.checkUpload(r); err != nil {
		return err
	}
	q := r.URL.Query()
	marker, _ := strconv.Atoi(q.Get("part-number-marker"))
	max := 1000
	if mp, err := strconv.Atoi(q.Get("max-parts")); err == nil && mp >= 0 {
		max = min(mp, 1000)
	}
	parts, err := s.node.Meta().Parts(r.upload())
	if err != nil {
		return toS3(err, errNoSuchUpload)
	}
	type entry struct {
		PartNumber   int    `xml:"PartNumber"`
		LastModified string `xml:"LastModified"`
		ETag         string `xml:"ETag"`
		Size         int64  `xml:"Size"`
	}
	out := struct {
		XMLName              xml.Name `xml:"ListPartsResult"`
		Xmlns                string   `xml:"xmlns,attr"`
		Bucket               string   `xml:"Bucket"`
		Key                  string   `xml:"Key"`
		UploadID             string   `xml:"UploadId"`
		PartNumberMarker     int      `xml:"PartNumberMarker"`
		NextPartNumberMarker int      `xml:"NextPartNumberMarker"`
		MaxParts             int      `xml:"MaxParts"`
		IsTruncated          bool     `xml:"IsTruncated"`
		StorageClass         string   `xml:"StorageClass"`
		Initiator            owner    `xml:"Initiator"`
		Owner                owner    `xml:"Owner"`
		Parts                []entry  `xml:"Part"`
	}{Xmlns: xmlns, Bucket: r.bucket, Key: r.key, UploadID: r.upload().ID, PartNumberMarker: marker, MaxParts: max, StorageClass: "STANDARD", Initiator: atollOwner, Owner: atollOwner}
	for _, p := range parts {
		if p.Number <= marker {
			continue
		}
		if len(out.Parts) == max {
			out.IsTruncated = true
			break
		}
		out.Parts = append(out.Parts, entry{PartNumber: p.Number, LastModified: p.Modified.Format(s3Time), ETag: p.ETag, Size: p.Size})
		out.NextPartNumberMarker = p.Number
	}
	writeXML(w, http.StatusOK, out)
	return nil
}

func (s *Server) listUploads(w http.ResponseWriter, r *request) *Error {
	q := r.URL.Query()
	if err := s.node.Sync(r.Context()); err != nil {
		return toS3(err, errNoSuchBucket)
	}
	us, uerr := s.node.Meta().Uploads(r.bucket, q.Get("prefix"))
	if uerr != nil {
		return toS3(uerr, errNoSuchBucket)
	}
	keyMarker, idMarker := q.Get("key-marker"), q.Get("upload-id-marker")
	max := 1000
	if mu, err := strconv.Atoi(q.Get("max-uploads")); err == nil && mu >= 0 {
		max = min(mu, 1000)
	}
	type entry struct {
		Key          string `xml:"Key"`
		UploadID     string `xml:"UploadId"`
		Initiator    owner  `xml:"Initiator"`
		Owner        owner  `xml:"Owner"`
		StorageClass string `xml:"StorageClass"`
		Initiated    string `xml:"Initiated"`
	}
	out := struct {
		XMLName            xml.Name `xml:"ListMultipartUploadsResult"`
		Xmlns              string   `xml:"xmlns,attr"`
		Bucket             string   `xml:"Bucket"`
		KeyMarker          string   `xml:"KeyMarker"`
		UploadIDMarker     string   `xml:"UploadIdMarker"`
		NextKeyMarker      string   `xml:"NextKeyMarker"`
		NextUploadIDMarker string   `xml:"NextUploadIdMarker"`
		Prefix             string   `xml:"Prefix"`
		MaxUploads         int      `xml:"MaxUploads"`
		IsTruncated        bool     `xml:"IsTruncated"`
		Uploads            []entry  `xml:"Upload"`
	}{Xmlns: xmlns, Bucket: r.bucket, KeyMarker: keyMarker, UploadIDMarker: idMarker, Prefix: q.Get("prefix"), MaxUploads: max}
	for _, u := range us {
		if u.Key < keyMarker || (u.Key == keyMarker && (idMarker == "" || u.ID <= idMarker)) {
			continue
		}
		if len(out.Uploads) == max {
			out.IsTruncated = true
			break
		}
		out.Uploads = append(out.Uploads, entry{Key: u.Key, UploadID: u.ID, Initiator: atollOwner, Owner: atollOwner, StorageClass: "STANDARD", Initiated: u.Created.Format(s3Time)})
		out.NextKeyMarker, out.NextUploadIDMarker = u.Key, u.ID
	}
	writeXML(w, http.StatusOK, out)
	return nil
}
