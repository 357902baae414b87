// The peer of bench/compare.sh (d): one Express process with the official twilio.webhook()
// middleware (HMAC-SHA1 over URL + sorted form params, 403 on a bad signature) answering <Response/>.
// It verifies only: no deduplication, no forwarding.
//   TWILIO_AUTH_TOKEN  the key the requests are signed with
//   PORT               where to listen on 127.0.0.1
//   PUBLIC_HOST        the host the provider calls (the signed URL is https://PUBLIC_HOST/...)
'use strict';
const express = require('express');
const twilio = require('twilio');

const app = express();
app.disable('x-powered-by');
app.use(express.urlencoded({ extended: false }));
app.post(
  '/hooks/twilio',
  twilio.webhook({ protocol: 'https', host: process.env.PUBLIC_HOST || 'hooks.example.com' }),
  (req, res) => {
    res.type('text/xml').send('<?xml version="1.0" encoding="UTF-8"?><Response/>');
  },
);
const port = Number(process.env.PORT || 3100);
app.listen(port, '127.0.0.1', () => console.log(`express+twilio.webhook listening on 127.0.0.1:${port}`));
