#!/usr/bin/env node
/*
 * Checks the Manta simulator's behaviour end to end. Signatures are made with
 * node's own crypto (not sshpk/http-signature, which the server verifies with).
 *
 *   . DIR/manta.env && node scripts/manta-sim/selftest.js
 *
 * Needs DOGESTRY_TEST_MANTA_URL, _USER, _SUBUSER, _KEYS_DIR, _OTHER_USER (from manta.env).
 * Prints one line per check and "N passed, N failed"; exits non-zero on a failure.
 */
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');

const URL_ = process.env.DOGESTRY_TEST_MANTA_URL;
const ACCT = process.env.DOGESTRY_TEST_MANTA_USER;
const SUB = process.env.DOGESTRY_TEST_MANTA_SUBUSER;
const KEYS = process.env.DOGESTRY_TEST_MANTA_KEYS_DIR;
const OTHER = process.env.DOGESTRY_TEST_MANTA_OTHER_USER;
if (!URL_ || !ACCT || !KEYS) {
    console.error('selftest: source DIR/manta.env first');
    process.exit(2);
}
const u = new URL(URL_);
const HOST = u.hostname;
const PORT = parseInt(u.port, 10);

const manifest = JSON.parse(fs.readFileSync(path.join(KEYS, 'keys.json'), 'utf8')).keys;
function keyInfo(file) {
    const k = manifest.find((e) => e.file === file);
    const pem = fs.readFileSync(k.path, 'utf8');
    const keyObj = crypto.createPrivateKey(k.passphrase ? { key: pem, passphrase: k.passphrase } : pem);
    return { file: file, key: keyObj, md5: k.md5 ? k.md5.replace(/^MD5:/, '') : null, sha256: k.sha256, type: k.type };
}
const RSA = keyInfo('id_rsa.pem');
const RSA8 = keyInfo('id_rsa.pkcs8.pem');
const RSAENC = keyInfo('id_rsa_enc.pem');
const EC256 = keyInfo('id_ecdsa_p256.pem');
const EC384 = keyInfo('id_ecdsa_p384.pem');
const EC521 = keyInfo('id_ecdsa_p521.pem');
const UNREG = keyInfo('unregistered_rsa.pem');
const OTHERK = keyInfo('other_rsa.pem');

function sign(key, alg, str) {
    const hash = alg.split('-')[1];
    return crypto.sign(hash, Buffer.from(str), key.key).toString('base64');
}

// opts: {method, path, headers, body, key, alg, user (acct[/sub]), keyId, date, sigHeaders, noAuth, rawAuth}
function request(opts) {
    return new Promise((resolve, reject) => {
        const headers = Object.assign({}, opts.headers || {});
        if (!opts.noAuth) {
            const date = opts.date !== undefined ? opts.date : new Date().toUTCString();
            if (date !== null) headers.date = date;
            const alg = opts.alg || 'rsa-sha256';
            const key = opts.key || RSA;
            const keyId = opts.keyId || ('/' + (opts.user || ACCT) + '/keys/' + key.md5);
            const hnames = opts.sigHeaders || ['date'];
            const str = opts.signingString || hnames.map((h) => h + ': ' + (h === 'host' ? HOST + ':' + PORT : headers[h])).join('\n');
            const sig = opts.badSig ? sign(key, alg, str + 'x') : sign(opts.signKey || key, alg, str);
            headers.authorization = opts.rawAuth || ('Signature keyId="' + keyId + '",algorithm="' + alg +
                '",headers="' + hnames.join(' ') + '",signature="' + sig + '"');
        }
        let body = opts.body;
        if (typeof body === 'string') body = Buffer.from(body);
        if (body && !opts.chunked) headers['content-length'] = body.length;
        if (!body && opts.method === 'PUT' && !opts.chunked && headers['content-length'] === undefined) headers['content-length'] = 0;
        const req = http.request({ host: HOST, port: PORT, method: opts.method || 'GET', path: opts.path, headers: headers,
            setHost: opts.hostHeader === undefined }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const buf = Buffer.concat(chunks);
                let json = null;
                if (/application\/json/.test(res.headers['content-type'] || '')) {
                    try { json = JSON.parse(buf.toString()); } catch (e) { json = null; }
                }
                resolve({ method: opts.method || 'GET', status: res.statusCode, headers: res.headers, body: buf, json: json });
            });
        });
        if (opts.hostHeader !== undefined) req.setHeader('host', opts.hostHeader);
        req.on('error', reject);
        if (body) req.write(body);
        req.end();
    });
}

let passed = 0, failed = 0;
async function check(name, fn) {
    try {
        await fn();
        passed++;
        console.log('ok   ' + name);
    } catch (e) {
        failed++;
        console.log('FAIL ' + name + ': ' + (e && e.message || e));
    }
}
function eq(a, b, what) {
    if (a !== b) throw new Error((what || 'value') + ': expected ' + JSON.stringify(b) + ', got ' + JSON.stringify(a));
}
function expectErr(r, status, code) {
    if (r.method === 'HEAD') {  // no body: the status is all there is
        if (r.status !== status) throw new Error('expected ' + status + ', got ' + r.status);
        return;
    }
    if (r.status !== status || !r.json || r.json.code !== code) {
        throw new Error('expected ' + status + ' ' + code + ', got ' + r.status + ' ' + r.body.toString().slice(0, 200));
    }
    if (typeof r.json.message !== 'string') throw new Error('error body without message');
}
function md5b64(b) { return crypto.createHash('md5').update(b).digest('base64'); }

const T = '/' + ACCT + '/stor/selftest-' + Date.now();

function rfc3986(str) {
    return encodeURIComponent(str).replace(/[!'()]/g, escape).replace(/\*/g, '%2A');
}
// What `msign` produces.
function signUrl(p, o) {
    o = o || {};
    const key = o.key || RSA;
    const q = {};
    q.algorithm = o.algorithm || 'RSA-SHA256';
    q.expires = String(o.expires || Math.floor(Date.now() / 1000) + 300);
    q.keyId = '/' + (o.user || ACCT) + '/keys/' + key.md5;
    if (o.methods) q.method = o.methods.join(',');
    const methods = (o.methods || ['GET']).slice().sort();
    const qs = Object.keys(q).sort((a, b) => a.localeCompare(b)).map((k) => rfc3986(k) + '=' + rfc3986(q[k])).join('&');
    const line = methods.join(',') + '\n' + (o.host || HOST + ':' + PORT) + '\n' + p + '\n' + qs;
    const sig = sign(key, q.algorithm.toLowerCase(), line);
    return p + '?' + qs + '&signature=' + rfc3986(o.tamper ? (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1) : sig);
}

async function main() {
    // ------------------------------------------------------------ authentication
    await check('anonymous GET /ACCT/stor -> 403 AuthorizationFailed', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', noAuth: true }), 403, 'AuthorizationFailed');
    });
    for (const [key, alg] of [[RSA, 'rsa-sha1'], [RSA, 'rsa-sha256'], [RSA, 'rsa-sha512'], [RSA8, 'rsa-sha256'],
        [RSAENC, 'rsa-sha256'], [EC256, 'ecdsa-sha256'], [EC384, 'ecdsa-sha256'], [EC384, 'ecdsa-sha512'],
        [EC521, 'ecdsa-sha512']]) {
        await check('signed ' + alg + ' with ' + key.file + ' -> 200', async () => {
            const r = await request({ path: '/' + ACCT + '/stor', key: key, alg: alg });
            eq(r.status, 200, 'status ' + r.body.toString());
            eq(r.headers['content-type'], 'application/x-json-stream; type=directory', 'content-type');
        });
    }
    await check('rsa-sha384 refused -> 400 InvalidHeader', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', alg: 'rsa-sha384' }), 400, 'InvalidHeader');
    });
    await check('ecdsa-sha384 (P-384) refused -> 400 InvalidHeader', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', key: EC384, alg: 'ecdsa-sha384' }), 400, 'InvalidHeader');
    });
    await check('hmac-sha256 -> 401 InvalidAlgorithm', async () => {
        const r = await request({ path: '/' + ACCT + '/stor', rawAuth: 'Signature keyId="/' + ACCT + '/keys/' + RSA.md5 +
            '",algorithm="hmac-sha256",signature="AAAA"' });
        expectErr(r, 401, 'InvalidAlgorithm');
    });
    await check('rsa-sha256 signature by an EC key id mismatch -> 403 InvalidSignature', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', key: EC256, alg: 'rsa-sha256', signKey: RSA }), 403, 'InvalidSignature');
    });
    await check('no Date header -> 400 InvalidHeader', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', date: null, signingString: 'date: x' }), 400, 'InvalidHeader');
    });
    await check('date not among the signed headers -> 400 InvalidHeader', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', sigHeaders: ['host'] }), 400, 'InvalidHeader');
    });
    await check('Date 10 minutes in the future -> 400 InvalidHeader (clock skew)', async () => {
        const r = await request({ path: '/' + ACCT + '/stor', date: new Date(Date.now() + 600000).toUTCString() });
        expectErr(r, 400, 'InvalidHeader');
        if (!/clock skew/.test(r.json.message)) throw new Error(r.json.message);
    });
    await check('Date 10 minutes old -> 400 RequestExpired (restify dateParser)', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', date: new Date(Date.now() - 600000).toUTCString() }), 400, 'RequestExpired');
    });
    await check('Date 4 minutes off either way -> 200', async () => {
        eq((await request({ path: '/' + ACCT + '/stor', date: new Date(Date.now() - 240000).toUTCString() })).status, 200);
        eq((await request({ path: '/' + ACCT + '/stor', date: new Date(Date.now() + 240000).toUTCString() })).status, 200);
    });
    await check('bad signature -> 403 InvalidSignature', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', badSig: true }), 403, 'InvalidSignature');
    });
    await check('registered key id, signed by another key -> 403 InvalidSignature', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', signKey: UNREG }), 403, 'InvalidSignature');
    });
    await check('unknown key -> 403 KeyDoesNotExist', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', key: UNREG }), 403, 'KeyDoesNotExist');
    });
    await check('keyId with "MD5:" prefix -> 403 KeyDoesNotExist', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', keyId: '/' + ACCT + '/keys/MD5:' + RSA.md5 }), 403, 'KeyDoesNotExist');
    });
    await check('keyId with SHA256 fingerprint -> 403 (KeyDoesNotExist, or InvalidKeyId when it holds a "/")', async () => {
        const r = await request({ path: '/' + ACCT + '/stor', keyId: '/' + ACCT + '/keys/' + RSA.sha256 });
        expectErr(r, 403, RSA.sha256.indexOf('/') === -1 ? 'KeyDoesNotExist' : 'InvalidKeyId');
        expectErr(await request({ path: '/' + ACCT + '/stor', keyId: '/' + ACCT + '/keys/SHA256:abcdefABCDEF+0123456789' }), 403, 'KeyDoesNotExist');
    });
    await check('malformed keyId -> 403 InvalidKeyId', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', keyId: '/' + ACCT + '/x/y/z/' + RSA.md5 }), 403, 'InvalidKeyId');
    });
    await check('unknown account in keyId -> 403 AccountDoesNotExist', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', user: 'nosuchaccount' }), 403, 'AccountDoesNotExist');
    });
    await check('sub-user key -> 200', async () => {
        eq((await request({ path: '/' + ACCT + '/stor', user: ACCT + '/' + SUB })).status, 200);
    });
    await check('unknown sub-user -> 403 UserDoesNotExist', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', user: ACCT + '/nobody' }), 403, 'UserDoesNotExist');
    });
    await check('other account -> 403 AuthorizationFailed', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', user: OTHER, key: OTHERK }), 403, 'AuthorizationFailed');
    });
    await check('Basic auth -> 403 AuthorizationSchemeNotAllowed', async () => {
        expectErr(await request({ path: '/' + ACCT + '/stor', rawAuth: 'Basic Zm9vOmJhcg==' }), 403, 'AuthorizationSchemeNotAllowed');
    });
    await check('unknown top-level path -> 404 before auth', async () => {
        expectErr(await request({ path: '/' + ACCT + '/nothing/here', noAuth: true }), 404, 'ResourceNotFound');
    });

    // ------------------------------------------------------------ directories and objects
    await check('PUT directory -> 204, again -> 204', async () => {
        const h = { 'content-type': 'application/json; type=directory' };
        eq((await request({ method: 'PUT', path: T, headers: h })).status, 204);
        eq((await request({ method: 'PUT', path: T, headers: h })).status, 204);
    });
    await check('PUT object, missing parent -> 404 DirectoryDoesNotExist', async () => {
        expectErr(await request({ method: 'PUT', path: T + '/nope/x', body: 'x' }), 404, 'DirectoryDoesNotExist');
    });
    const data = Buffer.from('hello manta simulator, 0123456789');
    let etag1;
    await check('PUT object with Content-MD5 -> 204 Computed-MD5 + uuid Etag', async () => {
        const r = await request({ method: 'PUT', path: T + '/obj', body: data,
            headers: { 'content-md5': md5b64(data), 'content-type': 'text/plain', 'm-color': 'blue' } });
        eq(r.status, 204);
        eq(r.headers['computed-md5'], md5b64(data), 'computed-md5');
        if (!/^[0-9a-f-]{36}$/.test(r.headers.etag || '')) throw new Error('etag ' + r.headers.etag);
        etag1 = r.headers.etag;
    });
    await check('PUT again -> fresh Etag', async () => {
        const r = await request({ method: 'PUT', path: T + '/obj', body: data, headers: { 'content-type': 'text/plain', 'm-color': 'blue' } });
        eq(r.status, 204);
        if (r.headers.etag === etag1) throw new Error('same etag');
        etag1 = r.headers.etag;
    });
    await check('PUT with wrong Content-MD5 -> 400 ContentMD5Mismatch, nothing stored', async () => {
        expectErr(await request({ method: 'PUT', path: T + '/bad', body: data, headers: { 'content-md5': md5b64('other') } }), 400, 'ContentMD5Mismatch');
        expectErr(await request({ method: 'HEAD', path: T + '/bad' }), 404, 'ResourceNotFound');
    });
    await check('HEAD object: length, MD5, type, Durability-Level 2, m- header', async () => {
        const r = await request({ method: 'HEAD', path: T + '/obj' });
        eq(r.status, 200);
        eq(r.headers['content-length'], String(data.length), 'length');
        eq(r.headers['content-md5'], md5b64(data), 'md5');
        eq(r.headers['content-type'], 'text/plain', 'type');
        eq(r.headers['durability-level'], '2', 'durability');
        eq(r.headers['m-color'], 'blue', 'm-color');
        eq(r.headers.etag, etag1, 'etag');
    });
    await check('durability-level 3 recorded; 0 and 10 refused', async () => {
        eq((await request({ method: 'PUT', path: T + '/d3', body: 'abc', headers: { 'durability-level': '3' } })).status, 204);
        eq((await request({ method: 'HEAD', path: T + '/d3' })).headers['durability-level'], '3');
        expectErr(await request({ method: 'PUT', path: T + '/d0', body: 'abc', headers: { 'durability-level': '0' } }), 400, 'InvalidDurabilityLevel');
        expectErr(await request({ method: 'PUT', path: T + '/d10', body: 'abc', headers: { 'durability-level': '10' } }), 400, 'InvalidDurabilityLevel');
    });
    await check('chunked PUT -> 204 and same bytes back', async () => {
        const r = await request({ method: 'PUT', path: T + '/chunked', body: data, chunked: true });
        eq(r.status, 204);
        const g = await request({ path: T + '/chunked' });
        eq(g.body.toString(), data.toString());
        eq(g.headers['accept-ranges'], 'bytes', 'accept-ranges');
    });
    await check('zero-byte object: Durability-Level 0, MD5 of nothing', async () => {
        eq((await request({ method: 'PUT', path: T + '/empty' })).status, 204);
        const r = await request({ method: 'HEAD', path: T + '/empty' });
        eq(r.headers['durability-level'], '0');
        eq(r.headers['content-md5'], '1B2M2Y8AsgTpgAmY7PhCfg==');
    });
    await check('GET ranges: 206 / suffix / open / 416 / multi 501 / ignored unit', async () => {
        let r = await request({ path: T + '/obj', headers: { range: 'bytes=0-4' } });
        eq(r.status, 206);
        eq(r.body.toString(), 'hello');
        eq(r.headers['content-range'], 'bytes 0-4/' + data.length, 'content-range');
        r = await request({ path: T + '/obj', headers: { range: 'bytes=-4' } });
        eq(r.status, 206);
        eq(r.body.toString(), '6789');
        r = await request({ path: T + '/obj', headers: { range: 'bytes=30-' } });
        eq(r.body.toString(), data.slice(30).toString());
        r = await request({ path: T + '/obj', headers: { range: 'bytes=1000-2000' } });
        expectErr(r, 416, 'RequestedRangeNotSatisfiable');
        eq(r.headers['content-range'], 'bytes */' + data.length, '416 content-range');
        expectErr(await request({ path: T + '/obj', headers: { range: 'bytes=0-1,3-4' } }), 501, 'NotImplemented');
        expectErr(await request({ path: T + '/obj', headers: { range: 'bytes=abc' } }), 416, 'RequestedRangeNotSatisfiable');
        r = await request({ path: T + '/obj', headers: { range: 'items=0-1' } });
        eq(r.status, 200);
        eq(r.body.length, data.length);
    });
    await check('conditional requests: If-None-Match * on existing -> 412, If-Match wrong -> 412, 304', async () => {
        expectErr(await request({ method: 'PUT', path: T + '/obj', body: 'z', headers: { 'if-none-match': '*' } }), 412, 'PreconditionFailed');
        expectErr(await request({ method: 'PUT', path: T + '/obj', body: 'z', headers: { 'if-match': 'nope' } }), 412, 'PreconditionFailed');
        eq((await request({ method: 'PUT', path: T + '/fresh', body: 'z', headers: { 'if-none-match': '*' } })).status, 204);
        eq((await request({ path: T + '/obj', headers: { 'if-none-match': etag1 } })).status, 304);
    });
    await check('SnapLink -> 403 SnaplinksDisabledError', async () => {
        const r = await request({ method: 'PUT', path: T + '/link', headers: { 'content-type': 'application/json; type=link', location: T + '/obj' } });
        expectErr(r, 403, 'SnaplinksDisabledError');
    });
    await check('PUT object onto a directory -> 400', async () => {
        const r = await request({ method: 'PUT', path: T, body: 'x' });
        if (r.status !== 400) throw new Error('status ' + r.status);
    });
    await check('PUT object onto /ACCT/stor -> 400 OperationNotAllowedOnRootDirectory', async () => {
        expectErr(await request({ method: 'PUT', path: '/' + ACCT + '/stor', body: 'x', headers: { 'content-type': 'application/octet-stream' } }),
            400, 'OperationNotAllowedOnRootDirectory');
    });
    await check('listing: sorted NDJSON, limit, inclusive marker, Result-Set-Size, bad limits', async () => {
        const L = T + '/list';
        eq((await request({ method: 'PUT', path: L, headers: { 'content-type': 'application/json; type=directory' } })).status, 204);
        for (const n of ['c', 'a', 'e', 'b', 'd']) {
            eq((await request({ method: 'PUT', path: L + '/' + n, body: n })).status, 204);
        }
        eq((await request({ method: 'PUT', path: L + '/sub', headers: { 'content-type': 'application/json; type=directory' } })).status, 204);
        let r = await request({ path: L });
        eq(r.headers['result-set-size'], '6', 'result-set-size');
        const lines = r.body.toString().trim().split('\n').map((l) => JSON.parse(l));
        eq(lines.map((e) => e.name).join(','), 'a,b,c,d,e,sub', 'order');
        eq(lines[0].type, 'object');
        eq(lines[0].size, 1);
        eq(lines[0].durability, 2);
        if (!/^\d{4}-\d\d-\d\dT/.test(lines[0].mtime)) throw new Error('mtime ' + lines[0].mtime);
        if (!lines[0].etag) throw new Error('no etag');
        eq(lines[5].type, 'directory');
        r = await request({ path: L + '?limit=2' });
        eq(r.body.toString().trim().split('\n').length, 2, 'limit=2');
        eq(r.headers['result-set-size'], '6', 'result-set-size with limit');
        r = await request({ path: L + '?limit=2&marker=b' });
        eq(r.body.toString().trim().split('\n').map((l) => JSON.parse(l).name).join(','), 'b,c', 'marker inclusive');
        expectErr(await request({ path: L + '?limit=0' }), 400, 'InvalidArgumentError');
        expectErr(await request({ path: L + '?limit=1025' }), 400, 'InvalidArgumentError');
        r = await request({ method: 'HEAD', path: L });
        eq(r.headers['content-type'], 'application/x-json-stream; type=directory');
        eq(r.headers['result-set-size'], '6');
    });
    await check('DELETE: non-empty dir 400, missing 404, object 204', async () => {
        expectErr(await request({ method: 'DELETE', path: T + '/list' }), 400, 'DirectoryNotEmpty');
        expectErr(await request({ method: 'DELETE', path: T + '/missing' }), 404, 'ResourceNotFound');
        eq((await request({ method: 'DELETE', path: T + '/list/a' })).status, 204);
        expectErr(await request({ path: T + '/list/a' }), 404, 'ResourceNotFound');
    });
    await check('DELETE /ACCT/stor -> 400 OperationNotAllowedOnRootDirectory', async () => {
        expectErr(await request({ method: 'DELETE', path: '/' + ACCT + '/stor' }), 400, 'OperationNotAllowedOnRootDirectory');
    });

    // ------------------------------------------------------------ signed URLs
    await check('signed URL GET -> 200 without Authorization', async () => {
        const r = await request({ path: signUrl(T + '/obj'), noAuth: true });
        eq(r.status, 200, r.body.toString());
        eq(r.body.toString(), data.toString());
    });
    await check('signed URL with ECDSA P-256 (ECDSA-SHA256) -> 200', async () => {
        eq((await request({ path: signUrl(T + '/obj', { key: EC256, algorithm: 'ECDSA-SHA256' }), noAuth: true })).status, 200);
    });
    await check('signed URL expired -> 403 InvalidQueryStringAuthentication', async () => {
        expectErr(await request({ path: signUrl(T + '/obj', { expires: Math.floor(Date.now() / 1000) - 10 }), noAuth: true }),
            403, 'InvalidQueryStringAuthentication');
    });
    await check('signed URL tampered -> 403 InvalidSignature', async () => {
        expectErr(await request({ path: signUrl(T + '/obj', { tamper: true }), noAuth: true }), 403, 'InvalidSignature');
    });
    await check('signed URL for another Host -> 403 InvalidSignature', async () => {
        expectErr(await request({ path: signUrl(T + '/obj', { host: 'example.com' }), noAuth: true }), 403, 'InvalidSignature');
    });
    await check('signed URL: HEAD on a GET-only URL -> 403; method=GET,HEAD allows HEAD', async () => {
        expectErr(await request({ method: 'HEAD', path: signUrl(T + '/obj'), noAuth: true }), 403, 'InvalidQueryStringAuthentication');
        eq((await request({ method: 'HEAD', path: signUrl(T + '/obj', { methods: ['HEAD', 'GET'] }), noAuth: true })).status, 200);
        eq((await request({ method: 'GET', path: signUrl(T + '/obj', { methods: ['HEAD', 'GET'] }), noAuth: true })).status, 200);
    });

    // ------------------------------------------------------------ multipart upload
    const big = crypto.randomBytes(5 * 1024 * 1024 + 17);
    const tail = Buffer.from('the last part');
    let up;
    await check('MPU create -> 201 {id, partsDirectory}', async () => {
        const r = await request({ method: 'POST', path: '/' + ACCT + '/uploads', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ objectPath: T + '/mpu', headers: { 'content-type': 'application/x-tar', 'm-kind': 'mpu' } }) });
        eq(r.status, 201, r.body.toString());
        up = r.json;
        if (!up.id || up.partsDirectory.indexOf('/' + ACCT + '/uploads/') !== 0) throw new Error(JSON.stringify(up));
    });
    let e0, e1, esmall;
    await check('MPU upload parts -> 204 with Etags', async () => {
        let r = await request({ method: 'PUT', path: up.partsDirectory + '/0', body: big });
        eq(r.status, 204, r.body.toString());
        e0 = r.headers.etag;
        r = await request({ method: 'PUT', path: up.partsDirectory + '/1', body: tail });
        eq(r.status, 204);
        e1 = r.headers.etag;
    });
    await check('MPU state -> created', async () => {
        const r = await request({ path: up.partsDirectory + '/state' });
        eq(r.status, 200);
        eq(r.json.state, 'created');
        eq(r.json.targetObject, T + '/mpu');
    });
    await check('MPU commit with a small non-final part -> 409 MultipartUploadInvalidArgument', async () => {
        const r2 = await request({ method: 'PUT', path: up.partsDirectory + '/2', body: 'tiny' });
        esmall = r2.headers.etag;
        expectErr(await request({ method: 'POST', path: up.partsDirectory + '/commit', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ parts: [e0, e1, esmall] }) }), 409, 'MultipartUploadInvalidArgument');
    });
    await check('MPU commit wrong etag -> 409', async () => {
        expectErr(await request({ method: 'POST', path: up.partsDirectory + '/commit', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ parts: [e0, 'nope'] }) }), 409, 'MultipartUploadInvalidArgument');
    });
    await check('MPU commit -> 201 Location + Computed-MD5; object assembled', async () => {
        const r = await request({ method: 'POST', path: up.partsDirectory + '/commit', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ parts: [e0, e1] }) });
        eq(r.status, 201, r.body.toString());
        eq(r.headers.location, T + '/mpu');
        const whole = Buffer.concat([big, tail]);
        eq(r.headers['computed-md5'], md5b64(whole), 'computed-md5');
        const g = await request({ path: T + '/mpu' });
        eq(g.status, 200);
        eq(md5b64(g.body), md5b64(whole), 'body');
        eq(g.headers['content-type'], 'application/x-tar');
        eq(g.headers['m-kind'], 'mpu');
        const s = await request({ path: up.partsDirectory + '/state' });
        eq(s.json.state, 'done');
        eq(s.json.result, 'committed');
    });
    await check('MPU commit again, same parts -> 201; abort after commit -> 409', async () => {
        eq((await request({ method: 'POST', path: up.partsDirectory + '/commit', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ parts: [e0, e1] }) })).status, 201);
        expectErr(await request({ method: 'POST', path: up.partsDirectory + '/abort' }), 409, 'InvalidMultipartUploadState');
    });
    await check('MPU abort -> 204, state aborted, commit after abort -> 409, part upload -> 409', async () => {
        const c = await request({ method: 'POST', path: '/' + ACCT + '/uploads', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ objectPath: T + '/mpu2' }) });
        const dir = c.json.partsDirectory;
        eq((await request({ method: 'POST', path: dir + '/abort' })).status, 204);
        const s = await request({ path: dir + '/state' });
        eq(s.json.result, 'aborted');
        expectErr(await request({ method: 'POST', path: dir + '/commit', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ parts: [] }) }), 409, 'InvalidMultipartUploadState');
        expectErr(await request({ method: 'PUT', path: dir + '/0', body: 'x' }), 409, 'InvalidMultipartUploadState');
    });
    await check('MPU redirect /ACCT/uploads/ID -> 301', async () => {
        const r = await request({ path: '/' + ACCT + '/uploads/' + up.id });
        eq(r.status, 301);
        eq(r.headers.location, up.partsDirectory);
    });
    await check('MPU by a sub-user -> 403 AuthorizationFailed', async () => {
        expectErr(await request({ method: 'POST', path: '/' + ACCT + '/uploads', user: ACCT + '/' + SUB,
            headers: { 'content-type': 'application/json' }, body: JSON.stringify({ objectPath: T + '/x' }) }), 403, 'AuthorizationFailed');
    });
    await check('MPU create without objectPath -> 409', async () => {
        expectErr(await request({ method: 'POST', path: '/' + ACCT + '/uploads', headers: { 'content-type': 'application/json' },
            body: '{}' }), 409, 'MultipartUploadInvalidArgument');
    });

    await check('GET /ACCT lists the top-level directories', async () => {
        const r = await request({ path: '/' + ACCT });
        eq(r.status, 200);
        const names = r.body.toString().trim().split('\n').map((l) => JSON.parse(l).name);
        if (names.indexOf('stor') === -1 || names.indexOf('uploads') === -1) throw new Error(names.join(','));
    });
    await check('If-Modified-Since in the future -> 304', async () => {
        eq((await request({ path: T + '/obj', headers: { 'if-modified-since': new Date(Date.now() + 3600000).toUTCString() } })).status, 304);
    });
    await check('sort=mtime lists newest first; sort_order=reverse oldest first', async () => {
        const L = T + '/mt';
        eq((await request({ method: 'PUT', path: L, headers: { 'content-type': 'application/json; type=directory' } })).status, 204);
        for (const n of ['z1', 'a2', 'm3']) {
            eq((await request({ method: 'PUT', path: L + '/' + n, body: n })).status, 204);
            await new Promise((res) => setTimeout(res, 5));
        }
        const names = async (q) => (await request({ path: L + q })).body.toString().trim().split('\n').map((l) => JSON.parse(l).name).join(',');
        eq(await names('?sort=mtime'), 'm3,a2,z1');
        eq(await names('?sort=mtime&sort_order=reverse'), 'z1,a2,m3');
        eq(await names('?sort_order=reverse'), 'z1,m3,a2');
        eq(await names('?obj=true&limit=1'), 'a2');
        expectErr(await request({ path: L + '?sort=none' }), 403, 'QueryParameterForbidden');
    });
    await check('signed URL for PUT (method=PUT) uploads without Authorization', async () => {
        const r = await request({ method: 'PUT', path: signUrl(T + '/presigned-put', { methods: ['PUT'] }), noAuth: true, body: 'via url' });
        eq(r.status, 204, r.body.toString());
        eq((await request({ path: T + '/presigned-put' })).body.toString(), 'via url');
    });
    await check('part upload to an unknown upload -> 404 DirectoryDoesNotExist', async () => {
        const id = crypto.randomUUID().slice(0, -1) + '3';
        expectErr(await request({ method: 'PUT', path: '/' + ACCT + '/uploads/' + id.slice(0, 3) + '/' + id + '/0', body: 'x' }),
            404, 'DirectoryDoesNotExist');
        expectErr(await request({ path: '/' + ACCT + '/uploads/' + id.slice(0, 3) + '/' + id + '/state' }), 404, 'ResourceNotFound');
    });
    await check('anonymous read under /ACCT/public allowed, write refused', async () => {
        eq((await request({ method: 'PUT', path: '/' + ACCT + '/public/pub.txt', body: 'public' })).status, 204);
        eq((await request({ path: '/' + ACCT + '/public/pub.txt', noAuth: true })).body.toString(), 'public');
        expectErr(await request({ method: 'PUT', path: '/' + ACCT + '/public/pub2.txt', noAuth: true, body: 'x' }), 403, 'AuthorizationFailed');
    });
    await check('x-durability-level and Expect: 100-continue', async () => {
        const r = await request({ method: 'PUT', path: T + '/cont', body: data, headers: { 'x-durability-level': '4', expect: '100-continue' } });
        eq(r.status, 204);
        eq((await request({ method: 'HEAD', path: T + '/cont' })).headers['durability-level'], '4');
    });

    // ------------------------------------------------------------ stats
    await check('GET /__sim/stats (no auth) counts requests', async () => {
        const r = await request({ path: '/__sim/stats', noAuth: true });
        eq(r.status, 200);
        if (!(r.json.total > 50) || !r.json.byOperation.PutObject) throw new Error(JSON.stringify(r.json).slice(0, 300));
    });

    console.log(passed + ' passed, ' + failed + ' failed');
    process.exit(failed ? 1 : 0);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
