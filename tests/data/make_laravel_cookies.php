<?php
// Makes tests/data/laravel_cookies.json: session cookies encrypted by Laravel's own
// EncryptCookies code path, for the Rust tests of the `laravel` id_format (CI needs no PHP).
//
// How it was run (from the repository root):
//     apt-get install php-cli php-laravel-framework   # Debian 12: Laravel 8.83
//     php tests/data/make_laravel_cookies.php > tests/data/laravel_cookies.json
//
// Each value is what EncryptCookies::encrypt puts in Set-Cookie for the session cookie:
// Encrypter::encrypt(CookieValuePrefix::create(name, key) . id, false) with AES-256-CBC, then
// rawurlencode()d as Symfony writes a non-raw cookie.

require '/usr/share/php/Illuminate/autoload.php';

use Illuminate\Cookie\CookieValuePrefix;
use Illuminate\Encryption\Encrypter;
use Illuminate\Support\Str;

$keys = [
    'current' => Encrypter::generateKey('AES-256-CBC'),
    'old' => Encrypter::generateKey('AES-256-CBC'),
    'other' => Encrypter::generateKey('AES-256-CBC'),
];

function cookie_value($key, $cookie_name, $id) {
    $encrypter = new Encrypter($key, 'AES-256-CBC');
    $value = $encrypter->encrypt(CookieValuePrefix::create($cookie_name, $key) . $id, false);
    return rawurlencode($value);
}

$cookies = [];
foreach (['current', 'old', 'other'] as $which) {
    $id = Str::random(40);
    $cookies[] = [
        'name' => "session id encrypted with the $which key",
        'key' => $which,
        'cookie_name' => 'laravel_session',
        'value' => cookie_value($keys[$which], 'laravel_session', $id),
        'id' => $id,
    ];
}
// Same id, encrypted again: Laravel does this on every response (new IV, same session).
$id = Str::random(40);
foreach ([1, 2] as $n) {
    $cookies[] = [
        'name' => "the same id, encryption $n",
        'key' => 'current',
        'cookie_name' => 'laravel_session',
        'value' => cookie_value($keys['current'], 'laravel_session', $id),
        'id' => $id,
    ];
}
// A valid encryption of another cookie's value (the CSRF cookie): the prefix names that
// cookie, so it must not be accepted as the session.
$cookies[] = [
    'name' => 'another cookie of the same app',
    'key' => 'current',
    'cookie_name' => 'XSRF-TOKEN',
    'value' => cookie_value($keys['current'], 'XSRF-TOKEN', Str::random(40)),
    'id' => null,
];

echo json_encode([
    'laravel_version' => Illuminate\Foundation\Application::VERSION,
    'app_keys' => array_map(fn ($k) => 'base64:' . base64_encode($k), $keys),
    'cookies' => $cookies,
], JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES), "\n";
