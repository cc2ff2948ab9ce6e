# A minimal Rails 6.1 app for unstick's end-to-end tests. Its session handling is Rails' own,
# unchanged: `cache_store` sessions in a per-process memory store (sticky, lost on restart),
# cookie `_legacy_session` holding a plain id. For a cookie whose id it does not hold, Rails
# issues a new id as soon as the session is read.
#
#   INSTANCE=a RAILS_ENV=production puma -b tcp://127.0.0.1:PORT tests/apps/rails/config.ru
#
# `POST /login` (form `user`), `POST /logout`, `GET /me` -> `{"user", "instance"}`.
require "action_controller/railtie"

class LegacyApp < Rails::Application
  config.load_defaults 6.1 # as a generated 6.1 app: CSRF protection on by default
  config.root = __dir__
  config.eager_load = false
  config.secret_key_base = "unstick-test-rails-secret-key-base-0123456789"
  config.cache_store = :memory_store
  config.session_store :cache_store, key: "_legacy_session"
  # To stderr (the test keeps it), never to a file under the app's root.
  config.logger = ActiveSupport::Logger.new($stderr)
  config.log_level = :warn
end

# Before the controller: the defaults (CSRF protection on) apply to ActionController::Base.
LegacyApp.initialize!

class SessionsController < ActionController::Base
  # A JSON API posted to without a form token. A real app keeps CSRF protection on, and its
  # token lives in the session (see docs/stacks/rails.md).
  skip_forgery_protection

  before_action :trust_unstick

  def me
    answer(@user)
  end

  def login
    user = params[:user].to_s
    return head(:bad_request) if user.empty?
    reset_session # a new id on login, as Rails apps do
    session[:user] = user
    answer(user)
  end

  def logout
    reset_session
    answer(nil)
  end

  private

  # The whole header strategy: the session's own login first, else the user unstick names.
  # Reading the session is what makes Rails re-issue an id it does not hold.
  def trust_unstick
    @user = session[:user].presence || request.headers["X-Auth-User"].presence
  end

  def answer(user)
    render json: { user: user, instance: ENV.fetch("INSTANCE", "?") }
  end
end

LegacyApp.routes.draw do
  get "/me" => "sessions#me"
  post "/login" => "sessions#login"
  post "/logout" => "sessions#logout"
end

run LegacyApp
