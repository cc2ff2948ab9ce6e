<?php
// A minimal Laravel 8 app for unstick's end-to-end tests. Its session handling is Laravel's
// own, unchanged: EncryptCookies, StartSession, the `file` driver, cookie `laravel_session`.
//
//     APP_KEY=base64:... APP_INSTANCE=a SESSION_FILES=DIR \
//     APP_PACKAGES_CACHE=FILE APP_SERVICES_CACHE=FILE PHP_CLI_SERVER_WORKERS=4 \
//     php -S 127.0.0.1:PORT -t public
//
// `POST /login` (form `user`), `POST /logout`, `GET /me` -> {"user", "instance"}; /me trusts
// X-Auth-User when the session has no user (routes/web.php). Needs Debian's
// php-laravel-framework; no Composer.
//
// Below: Laravel's front controller, as a new Laravel 8 app has it, with the Debian
// autoloader in place of Composer's.

require '/usr/share/php/Illuminate/autoload.php';

$app = require __DIR__.'/../bootstrap/app.php';

$kernel = $app->make(Illuminate\Contracts\Http\Kernel::class);

$response = $kernel->handle(
    $request = Illuminate\Http\Request::capture()
)->send();

$kernel->terminate($request, $response);
