'use strict'
// Express middleware in front of CAP's OData adapter that accepts request
// forms Dataverse accepts and CAP does not:
// - GUIDs in upper case;
// - '+' for a space in the query string (form encoding, as Rust's
//   serde_urlencoded and most HTTP clients write it): CAP's URL parser
//   rejects it, Dataverse reads it as a space;
// - `WhoAmI` without "()";
// - in a $batch, request URLs that are absolute (http://host/api/data/v9.2/leads)
//   or absolute paths (/api/data/v9.2/leads), as Dataverse's documentation
//   writes them: CAP wants them relative to the service root. The batch body
//   is read here (with a generous size limit; CAP's own limit is 100 kB, too
//   small for a batch of 1000 parts) and handed on already parsed;
// - and it holds a $batch to Dataverse's limit of 1000 requests.
const express = require('express')

const LIMIT = '1gb'
// Dataverse takes at most 1000 requests in one $batch and answers 400 past
// that. (CAP can limit it too, but answers 429, which a client would take
// for throttling and retry.)
const MAX_BATCH_PARTS = 1000

const tooManyParts = (res, n) =>
  res.status(400).json({
    error: { code: '400', message: `The batch has ${n} requests; the limit is ${MAX_BATCH_PARTS}.` },
  })

const GUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi

// '+' -> %20 in the query; GUIDs to lowercase (Dataverse compares them
// without regard to case, SQLite's text comparison does not, and the
// server stores them in lowercase).
const normalizeUrl = url => {
  url = url.replace(GUID, g => g.toLowerCase())
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q) + url.slice(q).replace(/\+/g, '%20')
}

// An URL inside a batch -> relative to the service root.
const relativeUrl = (url, servicePath) => {
  let u = url.replace(/^https?:\/\/[^/]+/i, '')
  if (u.startsWith(servicePath)) u = u.slice(servicePath.length)
  else if (u === servicePath.slice(0, -1)) u = ''
  u = u.replace(/^WhoAmI(?=$|\?|\/)/, 'WhoAmI()')
  return normalizeUrl(u)
}

const REQUEST_LINE = /^(GET|POST|PUT|PATCH|DELETE|MERGE) (\S+) (HTTP\/\d\.\d)(\r?)$/gm

function compat(servicePath) {
  const text = express.text({ type: () => true, limit: LIMIT })
  const json = express.json({ limit: LIMIT })
  return function dataverse_compat(req, res, next) {
    req.url = normalizeUrl(req.url)
    if (/^\/WhoAmI\/?(\?|$)/.test(req.url)) req.url = req.url.replace(/^\/WhoAmI\/?/, '/WhoAmI()')
    if (req.method !== 'POST' || req.path !== '/$batch') return next()
    const ct = req.headers['content-type'] || ''
    if (/multipart\/mixed/i.test(ct)) {
      return text(req, res, err => {
        if (err) return next(err)
        if (typeof req.body === 'string') {
          let n = 0
          req.body = req.body.replace(REQUEST_LINE, (_, m, url, v, cr) => {
            n++
            return `${m} ${relativeUrl(url, servicePath)} ${v}${cr}`
          })
          if (n > MAX_BATCH_PARTS) return tooManyParts(res, n)
        }
        next()
      })
    }
    if (/application\/json/i.test(ct)) {
      return json(req, res, err => {
        if (err) return next(err)
        const requests = Array.isArray(req.body?.requests) ? req.body.requests : []
        if (requests.length > MAX_BATCH_PARTS) return tooManyParts(res, requests.length)
        for (const r of requests) if (typeof r?.url === 'string') r.url = relativeUrl(r.url, servicePath)
        next()
      })
    }
    next()
  }
}

module.exports = { compat, normalizeUrl }
