<?php

namespace App\Http;

use Illuminate\Foundation\Http\Kernel as HttpKernel;

class Kernel extends HttpKernel
{
    /**
     * Laravel's own session handling, unchanged: the cookie is encrypted with APP_KEY, and the
     * session lives in the file driver. VerifyCsrfToken is left out: this is a JSON API for
     * tests, and no form of it is served to browsers.
     */
    protected $middlewareGroups = [
        'web' => [
            \Illuminate\Cookie\Middleware\EncryptCookies::class,
            \Illuminate\Cookie\Middleware\AddQueuedCookiesToResponse::class,
            \Illuminate\Session\Middleware\StartSession::class,
        ],
    ];
}
